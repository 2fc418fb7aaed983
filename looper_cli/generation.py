"""The generation engine shared by rollouts and eval.

`Generator.generate` takes prompts and returns K completions per prompt,
calling `on_prompt_done` as each prompt's group finishes, so callers can
stream results to disk. Prompts are batched by length (less padding).

Engines: `hf` is transformers' `generate` (any device, the reference for
greedy equality); `fast` (looper_cli.engine, GPU) is the static-cache,
CUDA-graph engine; `auto` picks `fast` on GPU when available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence

Engine = Literal["auto", "hf", "fast"]


@dataclass
class SamplingConfig:
    max_new_tokens: int = 512
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 1.0
    samples: int = 1  # K completions per prompt
    seed: int = 0
    batch_size: int = 256  # sequences in flight (prompts x samples)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens, EOS excluded
    finished: bool  # stopped at EOS rather than at max_new_tokens


OnPromptDone = Callable[[int, list[Completion]], None]


class Generator(Protocol):
    def generate(self, prompts: Sequence[str], cfg: SamplingConfig,
                 on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]: ...


def make_generator(model: Any, tokenizer: Any, engine: Engine = "auto") -> Generator:
    if engine == "fast" or (engine == "auto" and _fast_engine_usable(model)):
        from looper_cli.engine import FastGenerator

        return FastGenerator(model, tokenizer)
    return HFGenerator(model, tokenizer)


def _fast_engine_usable(model: Any) -> bool:
    try:
        from looper_cli.engine import FastGenerator
    except ImportError:
        return False
    return FastGenerator.supports(model) and _on_cuda(model)


def _on_cuda(model: Any) -> bool:
    param = next(iter(model.parameters()), None)
    return param is not None and param.device.type == "cuda"


def length_sorted_batches(prompt_lengths: Sequence[int], prompts_per_batch: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, longest first
    (the largest batch meets memory limits at once, not at the end)."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: -prompt_lengths[i])
    step = max(1, prompts_per_batch)
    return [order[i:i + step] for i in range(0, len(order), step)]


class HFGenerator:
    """transformers `generate` with left padding and length-sorted batches."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig,
                 on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        encoded = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        results: list[list[Completion]] = [[] for _ in prompts]
        per_batch = max(1, cfg.batch_size // max(1, cfg.samples))
        for b, batch in enumerate(length_sorted_batches([len(e) for e in encoded], per_batch)):
            torch.manual_seed(cfg.seed + b)
            groups = self._generate_batch([encoded[i] for i in batch], cfg)
            for i, group in zip(batch, groups):
                results[i] = group
                if on_prompt_done is not None:
                    on_prompt_done(i, group)
        return results

    def _generate_batch(self, batch_ids: list[list[int]], cfg: SamplingConfig) -> list[list[Completion]]:
        import torch

        tok, model = self.tokenizer, self.model
        padded = tok.pad({"input_ids": batch_ids}, return_tensors="pt").to(model.device)
        # Greedy samples are all the same: decode once, then repeat
        # (transformers also refuses num_return_sequences > 1 without sampling).
        per_prompt = 1 if cfg.greedy else cfg.samples
        kwargs: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=per_prompt,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if cfg.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        with torch.inference_mode():
            out = model.generate(**padded, **kwargs)
        new = out[:, padded["input_ids"].shape[1]:].tolist()
        completions = [self._completion(row) for row in new]
        groups = [completions[j * per_prompt:(j + 1) * per_prompt] for j in range(len(batch_ids))]
        return [g * (cfg.samples // per_prompt) for g in groups]

    def _completion(self, ids: list[int]) -> Completion:
        return completion_from_ids(self.tokenizer, ids)


def completion_from_ids(tokenizer: Any, ids: list[int]) -> Completion:
    """Generated token ids (EOS and trailing pads included or not) as a Completion."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    finished = eos in ids
    if finished:
        ids = ids[:ids.index(eos)]
    while ids and ids[-1] == pad and pad != eos:
        ids = ids[:-1]
    return Completion(tokenizer.decode(ids, skip_special_tokens=True), len(ids), finished)
