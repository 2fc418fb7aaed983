"""The transformers baseline: `generate` on left-padded, length-sorted static
batches. Any model, any device; the reference the fast engine's greedy
output must equal, and the path for models the fast engine does not run."""

from __future__ import annotations

import time
from typing import Any, Sequence

from looper_cli.engine.api import (Completion, EngineConfig, GenerationStats, OnPromptDone, SamplingConfig,
                                   TokenizingGenerator, completion_from_ids)


def length_sorted_batches(prompt_lengths: Sequence[int], prompts_per_batch: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, longest first
    (the largest batch meets memory limits at once, not at the end)."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: -prompt_lengths[i])
    step = max(1, prompts_per_batch)
    return [order[i:i + step] for i in range(0, len(order), step)]


class HFGenerator(TokenizingGenerator):
    """`config.max_seqs // group_size` prompts a batch; a batch runs until its
    longest sample ends (what the paged engine avoids)."""

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.stats = GenerationStats()

    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                     on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        import torch

        started = time.perf_counter()
        results: list[list[Completion]] = [[] for _ in prompts]
        per_batch = max(1, self.config.max_seqs // max(1, cfg.group_size))
        was_training = self.model.training
        self.model.eval()
        try:
            for b, batch in enumerate(length_sorted_batches([len(p) for p in prompts], per_batch)):
                torch.manual_seed(cfg.seed + b)
                groups = self._generate_batch([list(prompts[i]) for i in batch], cfg)
                for i, group in zip(batch, groups):
                    results[i] = group
                    self.stats.useful_tokens += sum(len(c.token_ids) for c in group)
                    if on_prompt_done is not None:
                        on_prompt_done(i, group)
        finally:
            self.model.train(was_training)
        self.stats.seconds += time.perf_counter() - started
        return results

    def release(self) -> None:
        """Nothing is kept between calls."""

    def _generate_batch(self, batch_ids: list[list[int]], cfg: SamplingConfig) -> list[list[Completion]]:
        groups: list[list[Completion]] = [[] for _ in batch_ids]
        if cfg.plus_greedy:
            greedy = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, samples=1,
                                    logprobs=cfg.logprobs)
            for group, extra in zip(groups, self._run(batch_ids, greedy)):
                group.extend(extra)
        if cfg.samples:
            for group, extra in zip(groups, self._run(batch_ids, cfg)):
                group.extend(extra)
        return groups

    def _run(self, batch_ids: list[list[int]], cfg: SamplingConfig) -> list[list[Completion]]:
        import torch

        tok, model = self.tokenizer, self.model
        tok.padding_side = "left"
        padded = tok.pad({"input_ids": batch_ids}, return_tensors="pt").to(model.device)
        # Greedy samples are all the same: decode once, then repeat
        # (transformers also refuses num_return_sequences > 1 without sampling).
        per_prompt = 1 if cfg.greedy else cfg.samples
        kwargs: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, num_return_sequences=per_prompt,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                      return_dict_in_generate=True, output_scores=cfg.logprobs)
        if cfg.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        with torch.inference_mode():
            out = model.generate(**padded, **kwargs)
        new = out.sequences[:, padded["input_ids"].shape[1]:]
        logprobs = _chosen_logprobs(out.scores, new) if cfg.logprobs else [None] * len(new)
        completions = [completion_from_ids(tok, row, lp, cfg.text) for row, lp in zip(new.tolist(), logprobs)]
        groups = [completions[j * per_prompt:(j + 1) * per_prompt] for j in range(len(batch_ids))]
        return [g * (cfg.samples // per_prompt) for g in groups]


def _chosen_logprobs(scores: Sequence[Any], new_ids: Any) -> list[list[float]]:
    """Log-probability of each generated token under the processed scores
    (temperature and top-p applied): the distribution it was drawn from."""
    import torch

    steps = torch.stack(list(scores), dim=1).float().log_softmax(dim=-1)  # [rows, steps, vocab]
    picked = steps.gather(-1, new_ids[:, :steps.shape[1], None]).squeeze(-1)
    return picked.tolist()
