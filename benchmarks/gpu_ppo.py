"""PPO steps on one GPU: `looper ppo --engine fast` (the engine in-process on
the live LoRA weights) against TRL's own transformers sampling (how ppo
sampled before issue 15), in the same run: seconds per step, split into
generation and the rest.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_ppo.py --model PATH/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data PATH/gsm8k --out DIR                      # both cases, one H200: a few minutes
    python benchmarks/gpu_ppo.py --cases small --device cpu --paths hf,trl   # smoke run, no GPU

Cases:
  smol   the --model checkpoint (SmolLM2-135M-Instruct): 64 completions a step (8 prompts x 8),
         256 new tokens, the settings of configs/smollm2-135m.toml (LoRA r=128, eager
         attention, no recomputation, T=0.8).
  8b     a random-initialised Llama of the 8B shape (benchmarks/gpu_models.py), bf16, LoRA r=64
         on all linear layers, 16 completions (2 prompts x 8) x up to 1,024 new tokens,
         recomputation on (ppo's GPU default), T=0.6. Random weights never pick EOS, so a hook
         on lm_head sets the EOS logit for every position to end a sample with probability
         --eos-rate (1/100: ~100 tokens a sample, the longest of 16 ~400); the training
         forward sees the same logits.
  small  8b's recipe on the small shape (a smoke run on CPU).
Paths:
  fast       --engine fast: KV cache and CUDA graphs kept between steps (the default)
  fast-release  --engine fast --release-engine-memory: the cache goes back to training after
             each generation phase, graphs are captured again
  fast-compile  --engine fast --compile: the training step's decoder layers torch.compiled
  hf         --engine hf: transformers generate behind the same hook (HFGenerator)
  trl        TRL's own transformers generate (no rollout_func): the path before the engine
  PATH@N     that path with `--steps-per-generation N`: one generation phase samples N steps'
             completions, and the warm-up and timed steps are rounded up to multiples of N so
             each timed window holds whole generation phases (fast@4, trl@4)

Each case x path runs in its own process (memory and compile caches start clean):
--warmup steps (the engine compiles and captures graphs), then --steps timed steps.
A step is on_step_begin..on_step_end (CUDA synchronised); generation is the time inside
GRPOTrainer._generate (the rollout hook or TRL's generate, decoding included); training is
the rest (Regime W scoring, the log-prob forward, forward/backward, optimizer). Useful
tokens are completion ids up to and including EOS. One JSON line per run as it ends,
a table last; --out DIR also writes DIR/gpu_ppo.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RANDOM_SHAPES = {"8b": "8b", "small": "small"}
DEFAULT_PATHS = {"smol": "fast,fast-release,trl", "8b": "fast,trl", "small": "fast,trl"}
DEFAULT_STEPS = {"smol": 3, "8b": 2, "small": 2}
# (completions a step, K, new tokens, temperature, LoRA r, eager attention, recompute)
RECIPES = {
    "smol": dict(batch_size=64, num_generations=8, max_new_tokens=256, temperature=0.8, lr=5e-6,
                 lora_r=128, lora_alpha=256, attn_implementation="eager", gradient_checkpointing=False,
                 template="chat"),
    "8b": dict(batch_size=16, num_generations=8, max_new_tokens=1024, temperature=0.6, lr=1e-5,
               lora_r=64, lora_alpha=128, template="plain"),
}
RECIPES["small"] = {**RECIPES["8b"], "max_new_tokens": 64}


# ----------------------------------------------------------------- one run (child)
def run_one(case: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from looper_cli import training
    from looper_cli.data import load_problems
    from looper_cli.ppo import PPOStageConfig, RegimeWReward, build_trainer, engine_config, ppo_dataset
    from looper_cli.ppo_rollout import GroupSampler
    from looper_cli.reward import RewardWeights
    from looper_cli.scoring import load_bandit

    training.quiet_hf_logging()
    label, (path, per_generation) = path, split_path(path)
    warmup, steps = (whole_phases(n, per_generation) for n in (args.warmup, args.steps or DEFAULT_STEPS[case]))
    recipe = {**RECIPES[case], **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})}
    # A kept cache sits beside the training step: a fixed size, not 90% of the GPU.
    keep = dict(keep_engine_memory=False) if path == "fast-release" else {}
    if path == "fast-compile":  # the training step's decoder layers torch.compiled (ppo --compile)
        keep.update(compile_layers=True, activation_budget=args.activation_budget)
    cfg = PPOStageConfig(output=Path(args.workdir) / f"{case}-{label}", max_steps=warmup + steps,
                         steps_per_generation=per_generation,
                         save_steps=10**6, logging_steps=1, engine="hf" if path == "hf" else "fast",
                         **keep, **recipe)  # type: ignore[arg-type]
    model, tokenizer = load_policy(case, args)
    if case in RANDOM_SHAPES:
        bias_eos(model, tokenizer.eos_token_id, cfg.temperature, args.eos_rate)
    if cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    prompts_a_step = cfg.batch_size // cfg.num_generations
    problems = load_problems(args.data, split="train", limit=prompts_a_step * cfg.max_steps, seed=0)
    reward = RegimeWReward(load_bandit(None, seed=0), RewardWeights(cfg.alpha, cfg.beta, cfg.gamma))
    sampler = None if path == "trl" else GroupSampler(cfg.engine, engine_config(cfg), cfg.keep_engine_memory)
    trainer = build_trainer(cfg, model, tokenizer, ppo_dataset(problems, tokenizer, cfg.template), reward,
                            Path(cfg.output), sampler, peft_config=training.lora_config(cfg, model))
    training.compile_decoder_layers(trainer.model, cfg)
    profile_file = Path(args.out or args.workdir) / f"host-profile-{case}-{path}.txt"
    timer = GenerationTimer(trainer, (args.profile_host, profile_file) if args.profile_host else None)
    split = TrainingSplit(trainer, args.device) if args.split else None
    clock = StepClock(timer, args.device, lambda: {**engine_phases(sampler), **(split.totals() if split else {})})
    trainer.add_callback(clock)
    trainer.train()
    timed = clock.steps[warmup:]
    step, gen = mean([s for s, _, _ in timed]), mean([g for _, g, _ in timed])
    tokens = sum(t for _, _, t in timed)
    phases = {name: round(mean([p[name] for p in clock.phases[warmup:]]), 4)
              for name in ENGINE_PHASES + ("compiled_graphs", "gc_seconds", "gc_full") + (SPLIT if split else ())}
    if phases.get("decode_steps"):
        phases["decode_ms_per_step"] = round(1000 * phases["decode_seconds"] / phases["decode_steps"], 3)
    # The collector's figures are the process's, not the engine's: no engine_ prefix.
    engine_split = {(name if name.startswith(("gc_", "train_")) else f"engine_{name}"): value
                    for name, value in phases.items()}
    return dict(case=case, path=label, steps_per_generation=per_generation, engine=getattr(sampler, "engine_name", None) or "trl-generate",
                steps=len(timed), warmup_s=round(sum(s for s, _, _ in clock.steps[:warmup]), 2),
                step_s=round(step, 3), generation_s=round(gen, 3), training_s=round(step - gen, 3),
                generation_share=round(gen / step, 3) if step else None,
                useful_tokens_per_step=round(tokens / max(1, len(timed)), 1),
                generation_tokens_per_s=round(tokens / (gen * len(timed)), 1) if gen else None,
                mean_completion_tokens=round(tokens / max(1, len(timed) * cfg.batch_size), 1),
                completions_per_step=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                peak_gpu_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None,
                **engine_split)


def split_path(path: str) -> tuple[str, int]:
    """'fast@4' -> ('fast', 4); 'fast' -> ('fast', 1)."""
    name, _, per_generation = path.partition("@")
    return name, int(per_generation or 1)


def whole_phases(steps: int, per_generation: int) -> int:
    """`steps` rounded up to whole generation phases."""
    return -(-steps // per_generation) * per_generation


def load_policy(case: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """The --model checkpoint, or a random Llama of the case's shape with the
    --model (or --tokenizer) tokenizer: the token ids only need to exist."""
    from looper_cli.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    if case not in RANDOM_SHAPES:
        return load_base_model(args.model, args.device), tokenizer
    from gpu_models import build_llama

    model = build_llama(RANDOM_SHAPES[case], args.device, "bfloat16" if args.device == "cuda" else "float32")
    if len(tokenizer) > model.config.vocab_size:  # the small shape's 512 ids (8B's 128,256 hold any)
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def bias_eos(model: Any, eos: int, temperature: float, rate: float) -> None:
    """Set the EOS logit at every position so that sampling at `temperature`
    picks EOS with probability `rate`: a random model's answers then end
    after ~1/rate tokens, as a trained model's do. Out of place and free of
    host syncs, so it is captured into CUDA graphs like the rest of lm_head."""
    import torch

    head = model.get_output_embeddings()
    index = torch.tensor([eos], device=head.weight.device)
    shift = math.log(rate / (1 - rate))

    def set_eos_logit(module: Any, inputs: Any, logits: Any) -> Any:
        rest = torch.logsumexp(logits.detach().float() / temperature, dim=-1, keepdim=True)
        return logits.index_copy(-1, index, (temperature * (rest + shift)).to(logits.dtype))

    head.register_forward_hook(set_eos_logit)


class GenerationTimer:
    """Seconds and useful tokens inside GRPOTrainer._generate (the same place
    for the engine's hook and TRL's own generate). With `profile` = (call
    number, file), that call runs under cProfile and its functions, by
    cumulative time, go to the file: where the host time around the engine
    goes (run 18: 0.08 s a step outside the engine's phases)."""

    def __init__(self, trainer: Any, profile: tuple[int, Path] | None = None):
        self.seconds, self.tokens, self.calls = 0.0, 0, 0
        generate = trainer._generate

        def timed(prompts: Any) -> Any:
            self.calls += 1
            profiler = start_profiler() if profile and self.calls == profile[0] else None
            started = time.perf_counter()
            out = generate(prompts)
            self.seconds += time.perf_counter() - started
            if profiler is not None:
                write_profile(profiler, profile[1])
            self.tokens += sum(len(ids) for ids in out[1])  # completion ids, cut after EOS
            return out

        trainer._generate = timed


def start_profiler() -> Any:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def write_profile(profiler: Any, path: Path) -> None:
    import io
    import pstats

    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(60)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())
    print(f"  step profile: generation call's host functions in {path}", flush=True)


ENGINE_PHASES = ("prepare_seconds", "prefill_seconds", "decode_seconds", "decode_steps")


class CollectorClock:
    """Seconds Python's garbage collector ran, and its full (generation 2) collections."""

    def __init__(self):
        import gc

        self.seconds, self.full, self._started = 0.0, 0, 0.0
        gc.callbacks.append(self._on_collect)

    def _on_collect(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2


COLLECTOR = CollectorClock()


def engine_phases(sampler: Any) -> dict[str, float]:
    """The engine's running totals of where generation went (GenerationStats), zeros without
    one, how many graphs torch.compile has made (a compile inside a timed step shows), and the
    garbage collector's time and full collections."""
    from torch._dynamo.utils import counters

    stats = getattr(getattr(sampler, "generator", None), "stats", None)
    totals = {name: float(getattr(stats, name, 0.0)) for name in ENGINE_PHASES}
    return {**totals, "compiled_graphs": float(counters["stats"]["unique_graphs"]),
            "gc_seconds": COLLECTOR.seconds, "gc_full": float(COLLECTOR.full)}


def sync(device: str) -> None:
    """Wait for the GPU, so a clock read after it counts the work launched before."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


SPLIT = ("train_prepare_seconds", "train_loss_forward_seconds")


class TrainingSplit:
    """--split: where a step's training time goes. Seconds inside TRL's
    `_generate_and_score_completions` (generation, decoding the text, Regime W
    scoring, advantages, and the old log-prob forward when one phase feeds
    several steps) and inside `compute_loss` (the loss forward); the step's
    rest is backward and optimizer. The GPU is synchronised at each edge, so
    asynchronous work is charged to the part that launched it."""

    def __init__(self, trainer: Any, device: str):
        self.seconds = dict.fromkeys(SPLIT, 0.0)
        self.device = device
        self._wrap(trainer, "_generate_and_score_completions", "train_prepare_seconds")
        self._wrap(trainer, "compute_loss", "train_loss_forward_seconds")

    def _wrap(self, trainer: Any, method: str, name: str) -> None:
        inner = getattr(trainer, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            started = time.perf_counter()
            out = inner(*args, **kwargs)
            sync(self.device)
            self.seconds[name] += time.perf_counter() - started
            return out

        setattr(trainer, method, timed)

    def totals(self) -> dict[str, float]:
        return dict(self.seconds)


def StepClock(timer: GenerationTimer, device: str, phases: Any) -> Any:  # noqa: N802 (a TrainerCallback)
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        steps: list[tuple[float, float, int]] = []  # (step s, generation s, useful tokens)
        phases: list[dict[str, float]] = []  # the engine's phases in each step

        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            self.mark = (time.perf_counter(), timer.seconds, timer.tokens)
            self.phase_mark = phases()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            started, generated, tokens = self.mark
            self.steps.append((time.perf_counter() - started, timer.seconds - generated, timer.tokens - tokens))
            self.phases.append({name: value - self.phase_mark[name] for name, value in phases().items()})
            split = self.phases[-1]
            print(f"  step {state.global_step}: {self.steps[-1][0]:.2f} s, generation {self.steps[-1][1]:.2f} s, "
                  f"{self.steps[-1][2]} tokens; engine prepare {split['prepare_seconds']:.3f} s, prefill "
                  f"{split['prefill_seconds']:.3f} s, decode {split['decode_seconds']:.3f} s in "
                  f"{split['decode_steps']:.0f} steps; {split['compiled_graphs']:.0f} graphs compiled; garbage "
                  f"collector {split['gc_seconds']:.3f} s, {split['gc_full']:.0f} full"
                  + (f"; prepare {split['train_prepare_seconds']:.3f} s (generation included), loss forward "
                     f"{split['train_loss_forward_seconds']:.3f} s" if "train_prepare_seconds" in split else ""),
                  flush=True)

    clock = Clock()
    clock.steps, clock.phases = [], []
    return clock


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ----------------------------------------------------------------- driver (parent)
def main() -> None:
    args = parse_args()
    if args.child:
        case, path = args.child
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as looper ppo sets it
        row = run_one(case, path, args)
        print("RESULT " + json.dumps(row), flush=True)
        return
    rows = []
    started = time.perf_counter()
    for case, path in planned_runs(args):
        left = args.budget - (time.perf_counter() - started)
        if left < 30:
            rows.append(dict(case=case, path=path, error=f"skipped: the {args.budget:.0f} s budget is spent"))
            continue
        rows.append(run_child(case, path, args, timeout=min(args.child_timeout, left)))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_ppo.json").write_text(json.dumps(rows, indent=1))
    print(f"\nall runs: {time.perf_counter() - started:.0f} s")
    print_table(rows)


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every case's engine and TRL runs first, the extras after: a spent
    budget cuts the least needed."""
    runs = [(case, path) for case in args.cases.split(",")
            for path in (args.paths or DEFAULT_PATHS[case]).split(",")]
    return sorted(runs, key=lambda run: split_path(run[1])[0] not in ("fast", "trl"))


def run_child(case: str, path: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    print(f"== {case} / {path}", flush=True)
    command = [sys.executable, __file__, "--child", case, path, *sys.argv[1:]]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        out, failure = done.stdout, (f"exit {done.returncode}" if done.returncode else None)
        detail = done.stderr[-3000:]
    except subprocess.TimeoutExpired as err:
        # A run can print its row and then outlast the budget while the process
        # tears down (run 21, smol fast@4): the row stands, the timeout is noted.
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        failure, detail = f"timeout after {timeout:.0f} s", out[-600:]
    sys.stdout.write("".join(line + "\n" for line in out.splitlines() if line.startswith("  step")))
    result = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not result:
        print(detail, flush=True)
        return dict(case=case, path=path, error=failure or "no result line")
    if failure:
        print(f"  (row kept; the run then ended with {failure})", flush=True)
    return json.loads(result[-1][len("RESULT "):])


def print_table(rows: list[dict[str, Any]]) -> None:
    """Per case and path: seconds a step (generation + training), generation's
    share, useful generated tokens/s, and the step time against TRL's own
    with the same steps per generation."""
    baseline = {(r["case"], r["steps_per_generation"]): r["step_s"] for r in rows
                if split_path(r["path"])[0] == "trl" and "step_s" in r}
    head = f"{'case':6} {'path':10} {'s/step':>8} {'gen s':>8} {'train s':>8} {'gen %':>6} " \
           f"{'gen tok/s':>10} {'tok/cmpl':>8} {'x trl':>6} {'GiB':>6}"
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['case']:6} {r['path']:10} {r['error']}")
            continue
        trl = baseline.get((r["case"], r["steps_per_generation"]))
        speedup = f"{trl / r['step_s']:6.1f}" if trl and r["step_s"] else "     -"
        print(f"{r['case']:6} {r['path']:10} {r['step_s']:8.2f} {r['generation_s']:8.2f} {r['training_s']:8.2f} "
              f"{100 * (r['generation_share'] or 0):6.1f} {r['generation_tokens_per_s'] or 0:10,.0f} "
              f"{r['mean_completion_tokens']:8.1f} {speedup} {r['peak_gpu_gib'] or 0:6.1f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="smol,8b", help="comma list of smol, 8b, small")
    parser.add_argument("--paths", default=None, help="comma list of fast, fast-release, fast-compile, hf, trl "
                        "(default: smol fast,fast-release,trl; 8b fast,trl)")
    parser.add_argument("--model", default=None, help="smol's checkpoint (folder or .gguf); its tokenizer "
                        "also serves the random models")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for the random models (default: --model's)")
    parser.add_argument("--data", default="synthetic", help="prompts: a GSM8K folder, .jsonl or synthetic")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: smol 3, 8b 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps (compile, graph capture)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="override the cases' (smoke runs)")
    parser.add_argument("--activation-budget", type=float, default=0.8, help="fast-compile: activations kept")
    parser.add_argument("--eos-rate", type=float, default=0.01, help="random models: P(EOS) at each step")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--workdir", default="/tmp/gpu_ppo", help="trainer output folders")
    parser.add_argument("--child-timeout", type=float, default=240.0, help="seconds for one case x path")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all runs: later runs are "
                        "cut short or skipped")
    parser.add_argument("--out", default=None, help="folder for gpu_ppo.json")
    parser.add_argument("--profile-host", type=int, default=None, metavar="N",
                        help="cProfile the N-th generation call: host-profile-CASE-PATH.txt in --out")
    parser.add_argument("--split", action="store_true", help="time TRL's batch preparation and loss forward "
                        "apart (a GPU sync at each edge)")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.model is None and args.tokenizer is None:
        parser.error("--model (or, for the random models only, --tokenizer) is needed")
    return args


if __name__ == "__main__":
    main()
