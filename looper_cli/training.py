"""What the training stages (sft, dpo, ppo) share: the common options, TRL
argument building, a Rich progress callback, resume detection, and the
end-of-run summary (summary.json + a table).

Heavy libraries are imported inside functions: the commands import this
module to build `--help`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from looper_cli.errors import UserError, require_at_least, require_between, require_counts, require_positive
from looper_cli.jsonl import atomic_write_json

SUMMARY_NAME = "summary.json"
LOG_NAME = "log.jsonl"  # one row per logging step: {"step": N, <the trainer's logged numbers>}
DEFAULT_RUN = "default"
ReportTo = Literal["none", "tensorboard", "wandb"]
# Options that change how a run goes, not what it learns: a resume may change
# them (more GPUs, another logger, eager attention after a NaN). Every other
# option must match the run being resumed.
RUN_ONLY_KEYS = frozenset({
    "run", "output", "resume", "gpus", "accelerate_config", "report_to", "gradient_checkpointing", "liger",
    "compile_layers", "activation_budget", "logging_steps", "save_steps", "save_total_limit",
    "attn_implementation"})


@dataclass
class TrainOptions:
    """Options every training stage has (each stage's config inherits them)."""

    run: str = DEFAULT_RUN  # checkpoints/<run>/<stage> when no output is given
    output: Optional[Path] = None
    epochs: float = 1.0
    max_steps: Optional[int] = None  # overrides epochs when set
    lr: float = 2e-4
    batch_size: int = 4  # per device
    grad_accum: int = 1
    max_length: int = 1024
    template: Optional[Literal["chat", "plain"]] = None  # None: what the start checkpoint used, else chat
    limit: Optional[int] = None  # use only the first N examples
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    resume: bool = False
    gpus: Optional[int] = None
    accelerate_config: Optional[Path] = None
    report_to: ReportTo = "none"
    gradient_checkpointing: Optional[bool] = None  # None: on with a GPU
    liger: bool = False  # Liger's fused kernels (GPU)
    compile_layers: bool = False  # torch.compile each decoder layer (sft, dpo; ppo with the fast engine)
    activation_budget: float = 0.8  # with compile_layers: saved activations kept, as a share of all


@dataclass
class LoraOptions:
    """LoRA options for the stages that create or extend an adapter."""

    full: bool = False  # full fine-tune instead of LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # or a comma list: q_proj,v_proj


def output_dir(opts: TrainOptions, stage: str) -> Path:
    return Path(opts.output) if opts.output else Path("checkpoints") / opts.run / stage


def train_device() -> str:
    """The device this process trains on: its own GPU under a multi-GPU
    launch (so rank 3 never loads a copy onto GPU 0), the CPU without one."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def lora_config(opts: LoraOptions, model: Any) -> Any:
    """The LoRA settings, with the target modules checked against `model`
    (a misspelled name would otherwise fail deep inside PEFT)."""
    from peft import LoraConfig

    targets: Any = opts.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
        check_lora_targets(model, targets)
    return LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def check_lora_targets(model: Any, targets: list[str]) -> None:
    """PEFT matches a target by the last parts of a module's name."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing or not targets:
        import torch.nn as nn

        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise UserError(f"--lora-targets {', '.join(missing) or '(empty)'}: no such module in the model "
                        f"(its linear layers: {', '.join(leaves[:12])}; or all-linear)")


def check_train_options(opts: TrainOptions) -> None:
    """The numbers that TRL, PEFT or torch would otherwise reject with a
    traceback deep inside training, or silently accept (0 epochs trains
    nothing and reports a loss of 0)."""
    if opts.max_steps is None:
        require_positive("--epochs", opts.epochs)
    require_positive("--max-steps", opts.max_steps)
    require_positive("--lr", opts.lr)
    require_counts({"--batch-size": opts.batch_size, "--grad-accum": opts.grad_accum, "--save-steps": opts.save_steps,
                    "--logging-steps": opts.logging_steps, "--limit": opts.limit,
                    "--save-total-limit": opts.save_total_limit})
    require_at_least("--max-length", opts.max_length, 2)
    require_between("--activation-budget", opts.activation_budget, 0, 1, low_open=True)
    if isinstance(opts, LoraOptions) and not opts.full:
        require_counts({"--lora-r": opts.lora_r})
        require_positive("--lora-alpha", opts.lora_alpha)
        require_between("--lora-dropout", opts.lora_dropout, 0, 1)


def require_room_for_answers(prompt_tokens: list[int], max_length: int) -> None:
    """Examples whose prompt fills --max-length have no answer tokens left
    and are dropped; when all are, training would start on nothing."""
    if prompt_tokens and min(prompt_tokens) >= max_length:
        raise UserError(f"--max-length {max_length} leaves no room for any answer: the shortest prompt "
                        f"is {min(prompt_tokens)} tokens")


def trl_args(opts: TrainOptions, out_dir: Path, device: str, **stage_args: Any) -> dict[str, Any]:
    """Keyword arguments shared by every TRL *Config: schedule, precision
    (bf16 on GPU, fp32 on CPU), checkpointing, logging; stage extras win."""
    on_gpu = device.startswith("cuda")
    args: dict[str, Any] = dict(
        output_dir=str(out_dir),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps if opts.max_steps else -1,
        learning_rate=opts.lr,
        per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        seed=opts.seed,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=recompute_activations(opts, on_gpu),
        use_liger_kernel=use_liger(opts),
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        logging_steps=opts.logging_steps,
        report_to=[] if opts.report_to == "none" else [opts.report_to],
        disable_tqdm=True,  # our Rich bar replaces HF's tqdm
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if on_gpu else None,
    )
    args.update(stage_args)
    return args


def trl_config(config_cls: Any, opts: TrainOptions, out_dir: Path, device: str, **stage_args: Any) -> Any:
    """A TRL *Config from `trl_args`, for a process that trains on one GPU
    unless accelerate launched several: on a machine with more GPUs visible,
    Trainer would wrap the model in nn.DataParallel, which TRL's trainers
    refuse (seen with `looper sft --gpus 1` on a 2-GPU machine)."""
    args = config_cls(**trl_args(opts, out_dir, device, **stage_args))
    if args.n_gpu > 1:  # only ever above 1 in a process accelerate did not launch
        args._n_gpu = 1  # what Trainer reads; its device setup has run (cached) by now
    return args


def recompute_activations(opts: TrainOptions, on_gpu: bool) -> bool:
    """By default on GPU: 7B-8B models at 1-2k tokens need it. On CPU the tiny
    models do not, and small models on a big GPU are faster without it.
    Compiled layers recompute through the activation budget instead
    (checkpointing inside a compiled layer freed no memory on an H100)."""
    if opts.gradient_checkpointing is not None:
        return opts.gradient_checkpointing
    return on_gpu and not opts.compile_layers


def compile_decoder_layers(model: Any, opts: TrainOptions) -> int:
    """torch.compile each decoder layer in place (one compiled graph serves
    them all) with the activation budget; returns how many were compiled.
    Layers, not the whole model: PEFT wrappers and the loss stay eager, and
    compiling takes one layer's time."""
    if not opts.compile_layers:
        return 0
    import torch._functorch.config as functorch_config

    functorch_config.activation_memory_budget = opts.activation_budget  # read when a layer compiles
    if opts.liger and is_main_process():
        print("looper: --liger is off under --compile (the compiler fuses those kernels itself)", flush=True)
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def decoder_layers(model: Any) -> Any:
    """The longest ModuleList named `...layers` (Llama, Qwen, Mistral: model.layers)."""
    import torch.nn as nn

    found = [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name.endswith("layers")]
    if not found:
        raise UserError(f"--compile found no decoder layers in {type(model).__name__}")
    return max(found, key=len)


def use_liger(opts: TrainOptions) -> bool:
    """Liger kernels when asked for, with one clear line if they are not
    installed. Not with compiled layers: inductor fuses RMSNorm, RoPE and
    SwiGLU itself, Liger's Triton kernels are opaque to it and block its
    memory planning (8B LoRA bench on an H100: 11.2k against 12.3k tok/s),
    and TRL's trainers already compute the loss with a fused LM head."""
    if not opts.liger or opts.compile_layers:
        return False
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        raise UserError("--liger needs the liger-kernel package: pip install liger-kernel")
    return True


def check_output_dir(opts: TrainOptions, out_dir: Path) -> Optional[str]:
    """The checkpoint to resume from, or None for a fresh start. A folder with
    checkpoints from an earlier run and no --resume is refused, so finished
    work is never overwritten by accident; a damaged newest checkpoint is
    named, not handed to the trainer."""
    last = last_checkpoint(out_dir)
    if opts.resume:
        if last is not None:
            check_checkpoint(Path(last))
        return last
    if last is not None:
        raise UserError(f"{out_dir} already holds checkpoints ({Path(last).name}); "
                        "pass --resume to continue, or choose another --output")
    return None


def check_checkpoint(folder: Path) -> None:
    """Cheap integrity checks of what `Trainer` reloads: the state parses, each
    safetensors header parses, each torch file is a whole zip (a cut or
    overwritten file loses its central directory)."""
    import zipfile

    for path in sorted(folder.iterdir()):
        try:
            if path.name == "trainer_state.json" and "global_step" not in json.loads(path.read_text()):
                raise ValueError("no global_step")
            elif path.suffix == ".safetensors":
                _safetensors_header(path)
            elif path.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(path).close()
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            raise UserError(f"checkpoint {folder} is damaged ({path.name}: {str(err).splitlines()[0][:80]}); "
                            "delete that folder to resume from the one before it") from None


def _safetensors_header(path: Path) -> None:
    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size <= path.stat().st_size - 8:
            raise ValueError("header size out of range")
        json.loads(fh.read(size))


def complete_checkpoints(out_dir: Path) -> dict[int, Path]:
    """`checkpoint-N` folders by step, without any a kill cut while it was
    being written (it lacks trainer_state.json, which the trainer writes after
    the weights)."""
    found: dict[int, Path] = {}
    if out_dir.is_dir():
        for child in out_dir.glob("checkpoint-*"):
            suffix = child.name.split("-", 1)[1]
            if suffix.isdigit() and (child / "trainer_state.json").is_file():
                found[int(suffix)] = child
    return found


def last_checkpoint(out_dir: Path) -> Optional[str]:
    """The newest complete `checkpoint-N` folder."""
    found = complete_checkpoints(out_dir)
    return str(found[max(found)]) if found else None


@dataclass
class OutputState:
    """Where a stage writes, and what is already there."""

    dir: Path
    done: Optional[dict[str, Any]]  # the summary of a finished run (with --resume): nothing to do
    resume_from: Optional[str]  # the checkpoint to continue from


def claim_stage_output(opts: TrainOptions, stage: str) -> Any:
    """Hold the output folder's lock for the whole stage (main process only:
    the other ranks of a multi-GPU run share the main one's claim)."""
    from contextlib import nullcontext

    from looper_cli.locks import claim_output

    if not is_main_process():
        return nullcontext()
    return claim_output(output_dir(opts, stage), stage, folder=True)


def prepare_output(opts: TrainOptions, stage: str) -> OutputState:
    """The output folder of `stage`, checked once: finished, resumable, or fresh
    (and the options checked before any model loads). A resume must use the
    settings the run was started with; they are recorded at the start."""
    from looper_cli.locks import check_output_kind

    check_train_options(opts)
    # Batches padded to their longest row change shape every step; growable segments keep
    # the freed blocks of one shape usable for the next (set before CUDA starts). A user's
    # own setting wins: ppo at 8B with the engine's cache kept trained unevenly with them
    # (docs/perf-notes.md, run 21 call 5), and `expandable_segments:False` evened it out.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    out_dir = check_output_kind(output_dir(opts, stage), folder=True)
    done = finished_summary(opts, out_dir, stage)
    if done is not None:
        return OutputState(out_dir, done, None)
    resume_from = check_output_dir(opts, out_dir)
    if resume_from is not None:
        check_same_settings(opts, stage, out_dir)
    if is_main_process():
        from looper_cli.config import save_resolved

        save_resolved(opts, stage, out_dir)  # what a later --resume is compared with
    return OutputState(out_dir, None, resume_from)


def finished_summary(opts: TrainOptions, out_dir: Path, stage: str) -> Optional[dict[str, Any]]:
    """The summary of a finished run in `out_dir`, when --resume asks for it
    with the same settings; a finished run is never trained over."""
    path = out_dir / SUMMARY_NAME
    if not path.is_file():
        return None
    if not opts.resume:
        raise UserError(f"{out_dir} holds a finished {stage} run; choose another --output "
                        "(or pass --resume to keep it as it is)")
    check_same_settings(opts, stage, out_dir, finished=True)
    if is_main_process():
        from looper_cli.progress import console

        console.print(f"looper {stage}: already finished, nothing to do; its output is in {out_dir}")
    return json.loads(path.read_text())


def check_same_settings(opts: TrainOptions, stage: str, out_dir: Path, finished: bool = False) -> None:
    """Resuming with other settings would train a mix of two runs under one
    name: refuse, naming what differs."""
    from looper_cli.config import RESOLVED_CONFIG_NAME, as_dict, changed_keys, load_toml

    saved_path = out_dir / RESOLVED_CONFIG_NAME
    if not saved_path.is_file():
        raise UserError(f"{out_dir} has no {RESOLVED_CONFIG_NAME} recording how its run was started; "
                        "it cannot be resumed safely: choose another --output")
    saved = load_toml(saved_path).get(stage, {})
    current = as_dict(opts)
    changed = changed_keys(saved, current, [k for k in current if k not in RUN_ONLY_KEYS])
    if changed:
        diffs = ", ".join(f"{k} {saved.get(k)} -> {current.get(k)}" for k in changed)
        run = f"the finished {stage} run in {out_dir}" if finished else f"the {stage} run in {out_dir}"
        raise UserError(f"--resume with other settings than {run} ({diffs}); "
                        "use the same settings, or choose another --output")


def progress_callback(stage: str) -> Any:
    """A TrainerCallback drawing a Rich bar (main process only) and keeping
    the losses for the summary."""
    from transformers import TrainerCallback

    from looper_cli.progress import make_progress

    class RichTrainProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Any = None
            self.task: Any = None
            self.losses: list[float] = []
            self.last_logs: dict[str, float] = {}
            self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at each step end

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                from rich.progress import TextColumn

                self.progress = make_progress(TextColumn("{task.fields[info]}"))
                self.progress.start()
                self.task = self.progress.add_task(stage, total=state.max_steps,
                                                   completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), int(getattr(state, "num_input_tokens_seen", 0) or 0)))
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs and _is_number(logs["loss"]):
                self.losses.append(float(logs["loss"]))
            numbers = {k: float(v) for k, v in logs.items() if _is_number(v)}
            self.last_logs.update(numbers)
            if state.is_world_process_zero:
                append_log(Path(args.output_dir), state.global_step, numbers)
            if self.progress is not None:
                self.progress.update(self.task, info=_short_logs(logs))

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
                self.progress = None

    return RichTrainProgress()


def append_log(out_dir: Path, step: int, numbers: dict[str, float]) -> None:
    """One row of log.jsonl (appended and flushed: a kill loses nothing
    logged). A resumed run logs the steps after its checkpoint again; readers
    keep the last row of each step (`read_training_log`)."""
    from looper_cli.jsonl import JsonlAppender

    if numbers:
        with JsonlAppender(out_dir / LOG_NAME) as log:
            log.write({"step": int(step), **numbers})


def read_training_log(path: Path) -> list[dict[str, Any]]:
    """log.jsonl's rows by step, the last row of each step winning."""
    from looper_cli.jsonl import read_jsonl

    by_step: dict[int, dict[str, Any]] = {}
    for row in read_jsonl(path, required=("step",)).rows:
        by_step.setdefault(int(row["step"]), {}).update(row)
    return [by_step[step] for step in sorted(by_step)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The few numbers worth watching beside the bar, by their log key: dpo's margins, ppo's mean
# reward, accuracy and generated tokens/s (all processes).
SHORT_LOGS = {"loss": "loss", "reward": "reward", "accuracy": "accuracy", "rewards/margins": "margins",
              "generation/tokens_per_s": "gen tok/s"}


def _short_logs(logs: dict[str, Any]) -> str:
    return "  ".join(f"{label}={logs[k]:.4g}" for k, label in SHORT_LOGS.items() if _is_number(logs.get(k)))


def quiet_hf_logging() -> None:
    """HF's own bars and info chatter would fight the Rich bar."""
    import warnings

    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def add_progress(trainer: Any, progress: Any) -> None:
    """Swap HF's printer/tqdm callbacks for our Rich bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress)


OOM_ADVICE = ("lower --batch-size or --max-length (with --compile, --activation-budget; without it, "
              "--gradient-checkpointing)")


def train_and_summarise(trainer: Any, stage: str, out_dir: Path, resume_from: Optional[str],
                        progress: Any, extra: Optional[dict[str, Any]] = None,
                        oom_advice: str = OOM_ADVICE) -> dict[str, Any]:
    """Train (resuming when asked), then build, write and print the summary;
    out of GPU memory, one line with `oom_advice`."""
    import torch

    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
    except torch.OutOfMemoryError:
        raise UserError(f"{stage} ran out of GPU memory at step {trainer.state.global_step}: {oom_advice}; "
                        "checkpoints written so far are kept") from None
    seconds = time.perf_counter() - started
    state = trainer.state
    losses = progress.losses or ([float(result.training_loss)] if _is_number(result.training_loss) else [])
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    summary: dict[str, Any] = {
        "stage": stage,
        "steps": int(state.global_step),
        "resumed_from": resume_from,
        "final_loss": losses[-1] if losses else None,
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "first_loss": losses[0] if losses else None,
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 and tokens else None,
        "second_half_tokens_per_s": second_half_rate(getattr(progress, "marks", [])),
        "peak_gpu_gib": peak_gpu_gib(),
        "output_dir": str(out_dir),
        **(extra or {}),
    }
    return summary


def second_half_rate(marks: list[tuple[float, int]]) -> Optional[float]:
    """Tokens/s over the second half of the steps: the rate once start-up
    (data loading, a compile on the first steps) is behind."""
    if len(marks) < 4:
        return None
    (t0, n0), (t1, n1) = marks[len(marks) // 2 - 1], marks[-1]
    return round((n1 - n0) / (t1 - t0), 1) if t1 > t0 and n1 > n0 else None


def peak_gpu_gib() -> Optional[float]:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def write_summary(summary: dict[str, Any], out_dir: Path, is_main: bool = True) -> None:
    if not is_main:
        return
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    print_summary(summary)


# ppo's split of the run between sampling and the rest.
GENERATION_ROWS = (("engine", "engine"), ("generation_seconds", "generation (s)"),
                   ("training_seconds", "training (s)"), ("generated_tokens_per_s", "generated tokens/s"))


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from looper_cli.progress import format_value

    table = Table(title=f"looper {summary.get('stage', '')}: done", show_header=False)
    rows = [("steps", summary.get("steps")), ("final loss", summary.get("final_loss")),
            ("mean loss", summary.get("mean_loss")), ("time (s)", summary.get("seconds")),
            ("tokens/s", summary.get("tokens_per_s")),
            ("tokens/s, 2nd half", summary.get("second_half_tokens_per_s")),
            ("peak GPU GiB", summary.get("peak_gpu_gib")), ("output", summary.get("output_dir"))]
    rows += [(k.replace("_", " "), v) for k, v in summary.items() if k.startswith(("mean_reward", "accuracy"))]
    rows += [(label, summary[k]) for k, label in GENERATION_ROWS if k in summary]
    for name, value in rows:
        if value is not None:  # nothing measured (no GPU, no training step): no row
            table.add_row(name, format_value(name, value))
    Console().print(table)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def save_tokenizer_and_config(tokenizer: Any, cfg: Any, section: str, out_dir: Path,
                              base: Optional[dict[str, Any]] = None) -> None:
    """The tokenizer, the resolved config and, for an adapter, the record of
    its base model (`models.base_identity` of the model it was trained on)."""
    from looper_cli.config import save_resolved
    from looper_cli.models import save_base_record

    if is_main_process():
        tokenizer.save_pretrained(out_dir)
        save_resolved(cfg, section, out_dir)
        if base is not None:
            save_base_record(out_dir, base)


def stage_summary_fields(cfg: Any) -> dict[str, Any]:
    """The few config values worth repeating in the summary (JSON types kept:
    `"full": false`, not the string "False")."""
    names = ("base_model", "data", "sft", "dpo", "prefs", "algo", "full")
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()
            if k in names and v is not None}


def load_trainable_policy(checkpoint: Any, base_model: Optional[str], flag: str) -> tuple[Any, Any, Optional[str]]:
    """(model, tokenizer, adapter path or None) from an earlier stage's output:
    an adapter folder (loaded trainable on its base) or a full model folder.
    The tokenizer saved with the stage wins over the base model's."""
    from looper_cli.errors import require_dir
    from looper_cli.models import load_model, load_tokenizer, resolve_checkpoint

    require_dir(checkpoint, f"{flag} checkpoint folder")
    base, adapter = resolve_checkpoint(checkpoint, base_model)
    tokenizer = load_tokenizer(checkpoint if has_tokenizer(checkpoint) else base)
    model = load_model(base, adapter, device=train_device(), trainable=True)
    return model, tokenizer, adapter


def has_tokenizer(folder: Any) -> bool:
    return any((Path(folder) / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))


def drop_reference_adapter(model: Any) -> None:
    """Remove the frozen "ref" adapter copy TRL's DPO/GRPO trainers add to a
    PeftModel, so only the trained adapter is saved."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")
