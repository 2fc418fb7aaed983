"""What every generator offers: the settings of one generation call, the
engine's memory and concurrency settings, the completions it returns, the
figures it reports, and `make_generator`, which picks the engine.

Two generators share this interface: `hf.HFGenerator` (transformers'
`generate`, any model, the reference for greedy equality) and
`generator.FastGenerator` (continuous batching over a paged KV cache,
Llama-family models). Nothing here imports torch: `looper --help` stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Optional, Protocol, Sequence

from looper_cli.errors import UserError, require_between, require_counts, require_positive

Engine = Literal["auto", "hf", "fast"]


@dataclass
class SamplingConfig:
    """What one `generate` call produces for each prompt."""

    max_new_tokens: int = 512
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 1.0
    samples: int = 1  # K completions per prompt
    seed: int = 0
    plus_greedy: bool = False  # a greedy completion first, then the K samples (eval's headline answer)
    logprobs: bool = False  # each generated token's log-probability under the sampling distribution
    # Decode each completion to text. ppo turns it off: TRL decodes the ids itself, and decoding 64
    # completions of ~215 tokens took 11 ms a step here on the CPU, for text nobody read.
    text: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def group_size(self) -> int:
        """Completions per prompt."""
        return self.samples + (1 if self.plus_greedy else 0)


@dataclass
class EngineConfig:
    """How much the engine may hold at once. `max_seqs` is what `--batch-size`
    meant before the paged engine: sequences in flight."""

    max_seqs: int = 256  # sequences decoded together (rows of a decode step)
    gpu_memory_utilization: float = 0.9  # share of the GPU this process may fill, weights included
    kv_cache_gib: Optional[float] = None  # an explicit KV cache size (wins over the share above)
    max_batched_tokens: int = 4096  # prompt tokens prefilled per step (a longer prompt goes in chunks)
    block_size: int = 16  # tokens per KV block
    decode_steps: int = 8  # decode steps between host checks (a row that ends mid-way idles for the rest)
    # ... once no prompt waits: a row that ends then has no one to hand its seat to, and each host
    # check stalls the GPU (a ppo step is all tail: its prompts start together)
    drain_decode_steps: int = 32
    eager: bool = False  # no CUDA graphs and no compiled layers (debugging)
    num_blocks: Optional[int] = None  # an exact KV cache size in blocks (tests, reproducing a preemption)


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens, EOS excluded
    finished: bool  # stopped at EOS rather than at max_new_tokens
    token_ids: list[int] = field(default_factory=list)  # generated ids, EOS included when finished
    logprobs: Optional[list[float]] = None  # one per token id, with SamplingConfig.logprobs


@dataclass
class GenerationStats:
    """What a generator did, summed over its calls (reset with `reset`)."""

    useful_tokens: int = 0  # generated tokens up to and including EOS: what callers get back
    prefill_tokens: int = 0  # prompt tokens run through the model (recomputation included)
    decode_steps: int = 0
    decode_row_slots: int = 0  # rows run over all decode steps (padding of a graph bucket included)
    busy_rows: int = 0  # rows over all decode steps that produced a token someone keeps
    preemptions: int = 0  # sequences evicted for KV memory and recomputed later
    kv_blocks: int = 0  # blocks in the KV cache
    peak_kv_blocks: int = 0  # most blocks in use at once
    seconds: float = 0.0
    # Where the engine's seconds went (wall, each phase ends synchronised with the GPU): weights
    # and cache made ready, prefill rounds, decode rounds; the rest is host work between them.
    prepare_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def mean_rows_busy(self) -> float:
        return self.busy_rows / self.decode_steps if self.decode_steps else 0.0

    @property
    def slot_use(self) -> float:
        """Share of decode row slots that produced a useful token."""
        return self.busy_rows / self.decode_row_slots if self.decode_row_slots else 0.0

    def add(self, other: dict[str, Any]) -> None:
        """Another generator's figures (`as_dict`): counts add up, the peak and
        the time are the larger (workers run side by side)."""
        for name in ("useful_tokens", "prefill_tokens", "decode_steps", "decode_row_slots", "busy_rows",
                     "preemptions", "kv_blocks"):
            setattr(self, name, getattr(self, name) + other[name])
        self.peak_kv_blocks = max(self.peak_kv_blocks, other["peak_kv_blocks"])
        for name in ("seconds", "prepare_seconds", "prefill_seconds", "decode_seconds"):
            setattr(self, name, max(getattr(self, name), other.get(name, 0.0)))

    def reset(self) -> None:
        for name, value in asdict(GenerationStats()).items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(mean_rows_busy=round(self.mean_rows_busy, 2), slot_use=round(self.slot_use, 4),
                   useful_tokens_per_s=round(self.useful_tokens / self.seconds, 1) if self.seconds else None)
        return out


def check_group_fits(group_size: int, config: EngineConfig) -> None:
    """A prompt's completions are decoded together, so they must fit the rows."""
    if group_size > config.max_seqs:
        raise UserError(f"{group_size} completions per prompt do not fit {config.max_seqs} sequences in flight; "
                        "raise --batch-size (--max-seqs in ppo)")


def check_engine_config(config: EngineConfig) -> None:
    """Engine options: one clear line for each bad value (errors.py's checks)."""
    require_counts({"sequences in flight (--batch-size; --max-seqs in ppo)": config.max_seqs,
                    "max_batched_tokens": config.max_batched_tokens, "block_size": config.block_size,
                    "decode_steps": config.decode_steps, "drain_decode_steps": config.drain_decode_steps})
    require_between("--gpu-memory-utilization", config.gpu_memory_utilization, 0, 1, low_open=True)
    require_positive("--kv-cache-gib", config.kv_cache_gib)


def engine_config(options: Any, group_size: int = 1) -> EngineConfig:
    """The engine settings of a stage config that has `batch_size` (sequences
    in flight), `gpu_memory_utilization` and `kv_cache_gib`, checked before
    any model loads. A prompt's completions are decoded together, so at least
    one group is in flight (`--batch-size 3 --samples 3` runs 3 samples and
    eval's greedy answer side by side, as transformers' path always did)."""
    require_counts({"--batch-size": options.batch_size})
    config = EngineConfig(max_seqs=max(options.batch_size, group_size),
                          gpu_memory_utilization=options.gpu_memory_utilization, kv_cache_gib=options.kv_cache_gib)
    check_engine_config(config)
    return config


OnPromptDone = Callable[[int, list[Completion]], None]


class Generator(Protocol):
    stats: GenerationStats

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig,
                 on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        """`cfg.group_size` completions per prompt; `on_prompt_done(i, group)`
        as each prompt's group finishes (in any order), for streaming."""
        ...

    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                     on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        """The same from token ids (no special tokens are added)."""
        ...

    def release(self) -> None:
        """Give back the memory kept between calls (KV cache, graphs, merged
        LoRA copies), e.g. to a trainer on the same GPU; the next call takes it
        again."""
        ...


class TokenizingGenerator:
    """`generate` for every generator: tokenize (no special tokens added), then
    its own `generate_ids`."""

    tokenizer: Any

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig,
                 on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        encoded = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        return self.generate_ids(encoded, cfg, on_prompt_done)

    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                     on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        raise NotImplementedError


def make_generator(model: Any, tokenizer: Any, engine: Engine = "auto",
                   config: EngineConfig | None = None) -> Generator:
    """`fast` for Llama-family models (on CUDA with `auto`), else transformers."""
    from looper_cli.engine.llama import fast_engine_refusal

    if engine == "fast" or (engine == "auto" and fast_engine_refusal(model) is None and _on_cuda(model)):
        from looper_cli.engine.generator import FastGenerator

        return FastGenerator(model, tokenizer, config or EngineConfig())
    from looper_cli.engine.hf import HFGenerator

    return HFGenerator(model, tokenizer, config or EngineConfig())


def _on_cuda(model: Any) -> bool:
    param = next(iter(model.parameters()), None)
    return param is not None and param.device.type == "cuda"


def completion_from_ids(tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float] | None = None,
                        text: bool = True) -> Completion:
    """Generated token ids (EOS and trailing pads included or not) as a
    Completion; its text is "" without `text`."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = list(ids)
    finished = eos is not None and eos in ids
    kept = ids[:ids.index(eos) + 1] if finished else ids
    while kept and not finished and kept[-1] == pad and pad != eos:
        kept = kept[:-1]
    text_ids = kept[:-1] if finished else kept
    return Completion(tokenizer.decode(text_ids, skip_special_tokens=True) if text else "", len(text_ids), finished,
                      token_ids=kept, logprobs=list(logprobs[:len(kept)]) if logprobs is not None else None)
