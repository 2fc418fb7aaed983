"""Sampling for `looper ppo`: every generation phase of TRL's trainer samples
through a looper engine (engine/api.py), in this process, on the policy the
optimizer is training.

Where it plugs in
    GRPOTrainer calls `GroupSampler` as its `rollout_func(prompts, trainer)`,
    TRL's hook for custom generation. RLOOTrainer (TRL 1.16) has no such hook,
    so `rloo_trainer_class` overrides its `_generate_single_turn`, the one
    method that turns prompt ids into completion ids. Both end in
    `GroupSampler.sample`. `--engine hf` is transformers' `generate`
    (HFGenerator) behind the same hook: groups, seeds, log-probs, timing and
    memory take one path whatever the engine, any model works, and switching
    engines changes the generator only.

Groups
    TRL's RepeatSampler puts the K copies of a prompt next to each other and
    both hooks receive them so: TRL 1.16's rollout_func docstring says "no
    duplication", its code passes the rows as the sampler repeated them (the
    tests check it). We send each prompt once with `samples=K`, so a group is
    generated together (the fast engine prefills the prompt once and forks
    its KV blocks) and comes back as K consecutive completions, which
    RegimeWReward scores as one group. Under `--gpus N`, accelerate gives
    each process whole batches of `batch_size` rows of the sampler's stream,
    and `ppo.start_checkpoint` makes `batch_size` a multiple of K, so a group
    never straddles processes; a run of K rows that is not one prompt stops
    the run rather than score partial groups.

Log-probs
    The loss uses the training forward's log-probs, TRL's default without
    vLLM. With one generation per optimizer step (num_iterations 1,
    steps_per_generation = grad_accum: ppo's default) TRL takes the old
    log-probs to be the current ones, detached: the ratio is 1 and the
    gradient is the on-policy one. With `--steps-per-generation N > 1` one
    phase samples N steps' completions, and TRL takes the old log-probs from
    a no-grad training forward right after sampling, so the later steps'
    ratios (and PPO's clip) measure how far the policy moved since. TRL's
    importance-sampling correction exists only behind `use_vllm` (it builds
    a vLLM engine); it corrects for a sampler whose weights or kernels
    differ from the trainer's. Ours samples
    with the trainer's own modules and weights, so the two distributions
    differ only by kernel rounding (in float32 on CPU they agree to 1e-4:
    tests/test_train_ppo.py). The engine's log-probs (temperature applied, as
    in TRL's forward) are still returned, one per completion id: TRL keeps
    them as `sampling_per_token_logps` for its off-policy mask.

Weights
    The engine reads the model's live parameters: plain weights in place
    (CUDA graphs read them by address, and the optimizer updates them in place,
    same storage), and a LoRA projection through a merged copy that
    `engine/weights.py` rebuilds from the current adapter parameters at the
    start of every generation call. So after an optimizer step it samples from
    the updated policy, with no transfer or sync. FSDP and DeepSpeed ZeRO-3
    gather sharded parameters into new storage for each generation, so
    `--engine fast` is refused there.

Memory
    The engine's KV cache and the trainer share the GPU. The engine sizes the
    cache when a generation phase starts, from what the trainer leaves
    (`gpu_memory_utilization` is a share of the whole GPU, the trainer's
    weights, gradients and optimizer state included), never more than one
    step's rows need. By default cache and CUDA graphs stay between phases
    (re-capturing every graph at each step took more time than the cache's
    memory was worth: 8B on an H200, docs/perf-notes.md); without
    `keep_memory` each phase ends with `release()`, so the training forward and
    backward get that memory back. Out of memory while sampling stops the run
    with one line naming what to lower.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import time
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from looper_cli.engine.api import Completion, Engine, EngineConfig, Generator, SamplingConfig, make_generator
from looper_cli.errors import UserError

T = TypeVar("T")

SAMPLING_OOM = ("ppo ran out of GPU memory while sampling: lower --gpu-memory-utilization or --kv-cache-gib "
                "(the engine's KV cache), --max-seqs, --batch-size or --max-new-tokens; "
                "checkpoints written so far are kept")
GENERATION_RATE_METRIC = "generation/tokens_per_s"


class GroupSampler:
    """Samples the K completions of each prompt together, with the engine
    built (once) on the trainer's live model; counts time and tokens."""

    def __init__(self, engine: Engine = "auto", config: Optional[EngineConfig] = None, keep_memory: bool = False,
                 make: Callable[[Any, Any, Engine, EngineConfig], Generator] = make_generator):
        self.engine = engine
        self.config = config or EngineConfig()
        self.keep_memory = keep_memory
        self.make = make
        self.generator: Optional[Generator] = None
        self.engine_name: Optional[str] = None  # "fast" or "hf", once built
        self._model: Any = None
        self._warmed = False  # the generator's decode graphs are captured
        self.seconds = 0.0  # in generate calls, this process
        self.tokens = 0  # completion ids returned (EOS included), this process

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """GRPOTrainer's rollout_func: `prompts` are the text rows of this
        process, each repeated K times in a row."""
        k = group_size(trainer)
        heads = group_heads(prompts, k)
        prompt_ids = trainer.processing_class(text=heads)["input_ids"]  # as TRL tokenizes text prompts
        return rollout_output(prompt_ids, self.sample(trainer, prompt_ids, k))

    def sample(self, trainer: Any, prompt_ids: Sequence[Sequence[int]], k: int) -> list[list[Completion]]:
        """K completions of each prompt, in prompt order, with their log-probs."""
        import torch

        cfg = sampling_config(trainer, k, seed=draw_seed())
        started = time.perf_counter()
        try:
            with self._generation_model(trainer) as model:
                generator = self._generator(model, trainer)
                self._warm_up(generator, prompt_ids, cfg)
                groups = generator.generate_ids(prompt_ids, cfg)
        except torch.OutOfMemoryError:
            self._release()  # whatever the setting: the run stops, and memory goes first
            raise UserError(SAMPLING_OOM) from None
        if not self.keep_memory:
            self._release()  # the KV cache goes back to the training step
        freeze_startup_heap()
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for group in groups for c in group)
        self.seconds += seconds
        self.tokens += tokens
        log_generation_rate(trainer, tokens, seconds)
        return groups

    def _warm_up(self, generator: Generator, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig) -> None:
        """With the cache kept, capture every decode graph at the first
        generation: a graph first needed mid-run (fewer rows left running)
        would cost seconds inside some later step instead."""
        if self.keep_memory and not self._warmed and hasattr(generator, "warm_up"):
            generator.warm_up(max(map(len, prompt_ids)) + cfg.max_new_tokens, top_p=not cfg.greedy and cfg.top_p < 1)
            self._warmed = True

    def _generation_model(self, trainer: Any) -> Any:
        """The model to sample from. Once the fast engine holds the trainer's
        model, that model itself: the engine reads its parameters in place and
        never runs its decoder layers, so TRL's unwrapping (which walks every
        module twice to find compiled regions and turn gradient checkpointing
        off and on: 35 ms of each generation call on an H200's host, run 19)
        would change nothing it reads."""
        if self.engine_name == "fast" and trainer.model is self._model:
            return contextlib.nullcontext(self._model)
        return generation_model(trainer)

    def _release(self) -> None:
        if self.generator is not None:
            self.generator.release()

    def _generator(self, model: Any, trainer: Any) -> Generator:
        # Built once, on the model object itself: its modules are what the
        # optimizer updates in place. A different object (never seen under
        # DDP) gets a new generator rather than a stale one.
        if self.generator is None or model is not self._model:
            if self.generator is not None:
                self.generator.release()
            from looper_cli.engine.hf import HFGenerator

            self.generator = self.make(model, trainer.processing_class, engine_for(self.engine, trainer),
                                       self.config)
            self.engine_name = "hf" if isinstance(self.generator, HFGenerator) else "fast"
            self._model = model
            self._warmed = False
        return self.generator


_HEAP_FROZEN = False


def freeze_startup_heap() -> None:
    """Once per process, after the first generation (the model, the trainer,
    the compiled code and the decode graphs exist by then): collect, then
    move every object alive into the collector's permanent generation
    (`gc.freeze`). Why: Python's full collections walk every tracked object,
    and a ppo process holds over a million (457k after the imports alone);
    each took ~0.3 s here and fell inside some step, at random (run 17's
    0.42 s stall in one ppo step). Reference counting still frees frozen
    objects; only cycles among them wait for the process's exit, which
    thaws them first (else Triton's bindings report them as leaked)."""
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        gc.collect()
        gc.freeze()
        atexit.register(gc.unfreeze)
        _HEAP_FROZEN = True


def group_size(trainer: Any) -> int:
    return trainer.num_generations if trainer.model.training else trainer.num_generations_eval


def group_heads(rows: Sequence[T], k: int) -> list[T]:
    """The first row of each run of K. TRL repeats each prompt K times in a
    row; a run that is not K copies of one prompt is a split group, whose
    partial scores would be wrong: stop instead."""
    if len(rows) % k:
        raise RuntimeError(f"ppo got {len(rows)} prompt rows, not whole groups of {k}")
    heads = list(rows[::k])
    for g, head in enumerate(heads):
        if any(row != head for row in rows[g * k:(g + 1) * k]):
            raise RuntimeError(f"ppo prompt rows {g * k}..{(g + 1) * k - 1} are not one prompt repeated {k} "
                               "times: a completion group would be split")
    return heads


def rollout_output(prompt_ids: Sequence[Sequence[int]], groups: list[list[Completion]]) -> dict[str, list[Any]]:
    """What rollout_func returns: one row per completion, groups in order;
    `logprobs[i][j]` is the log-prob of `completion_ids[i][j]`."""
    rows = [(list(ids), c) for ids, group in zip(prompt_ids, groups) for c in group]
    return {"prompt_ids": [ids for ids, _ in rows], "completion_ids": [list(c.token_ids) for _, c in rows],
            "logprobs": [list(c.logprobs or []) for _, c in rows]}


def sampling_config(trainer: Any, k: int, seed: int) -> SamplingConfig:
    """The distribution TRL's loss assumes: its temperature (the training
    forward divides the logits by it) and top-p. Settings the engines do not
    implement must be off (looper never sets them)."""
    unsupported = {"top_k": (trainer.top_k, 0), "min_p": (trainer.min_p, None),
                   "repetition_penalty": (trainer.repetition_penalty, 1.0),
                   "generation_kwargs": (trainer.args.generation_kwargs, None)}
    for name, (value, neutral) in unsupported.items():
        if value != neutral:
            raise UserError(f"ppo's engines do not sample with {name}={value!r}")
    return SamplingConfig(max_new_tokens=trainer.max_completion_length, temperature=trainer.temperature,
                          top_p=trainer.top_p, samples=k, seed=seed, logprobs=True, text=False)


def draw_seed() -> int:
    """A sampling seed from torch's generator, which TRL seeds per process
    and checkpoints restore: every step and process samples differently, and
    a resumed run draws the same seeds."""
    import torch

    return int(torch.randint(0, 2**31 - 1, ()).item())


def engine_for(engine: Engine, trainer: Any) -> Engine:
    """The engine asked for, except where parameters are sharded: FSDP and
    ZeRO-3 gather them into new storage each time, which the fast engine's
    in-place reads (and CUDA graphs) cannot follow."""
    from trl.distributed import DistributedBackend

    backend = DistributedBackend(trainer.accelerator)
    if not (backend.is_fsdp or backend.is_zero3):
        return engine
    if engine == "fast":
        raise UserError("--engine fast reads the parameters in place, and FSDP / DeepSpeed ZeRO-3 shard them; "
                        "use --engine hf, or an accelerate config without sharding")
    return "hf"


@contextlib.contextmanager
def generation_model(trainer: Any) -> Iterator[Any]:
    """The trainer's model as TRL's own generation gets it (DDP unwrapped,
    ZeRO-3 parameters gathered, FSDP1 parameters summoned, gradient
    checkpointing off). Each generator turns dropout off itself, so the
    samples and their log-probs are the policy's: the fast engine on its
    dropout modules only (`generator.dropout_off`), transformers' generate
    with `model.eval()` (its attention reads the training flag too)."""
    from trl.distributed import DistributedBackend
    from trl.models import unwrap_model_for_generation

    args = trainer.args
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     gather_deepspeed3_params=args.ds3_gather_for_generation,
                                     gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model, \
            DistributedBackend(trainer.accelerator).summon_full_params(trainer.model_wrapped, recurse=False):
        yield model


def log_generation_rate(trainer: Any, tokens: int, seconds: float) -> None:
    """Generated tokens/s of all processes, in the trainer's logs (and so on
    the progress bar). TRL averages a logged metric over processes, which
    generate side by side: the mean rate times their number is the total."""
    log_metric = getattr(trainer, "_log_metric", None)  # what reward functions get as `log_metric`
    if log_metric is not None and seconds > 0:
        log_metric(GENERATION_RATE_METRIC, tokens / seconds * trainer.accelerator.num_processes)


def rloo_trainer_class(sampler: GroupSampler) -> type:
    """RLOOTrainer sampling through `sampler`. TRL 1.16's RLOOTrainer has no
    rollout_func, so this overrides `_generate_single_turn` (prompt ids in,
    completion ids out, TRL's prompts repeated K times in a row)."""
    from trl import RLOOTrainer

    class EngineRLOOTrainer(RLOOTrainer):
        def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any):
            k = group_size(self)
            groups = sampler.sample(self, group_heads(prompt_ids, k), k)
            return [list(c.token_ids) for group in groups for c in group]

    return EngineRLOOTrainer
