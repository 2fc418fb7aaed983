"""`FastGenerator`: the rollout engine behind `generation.make_generator`.

Per batch of prompts (length-sorted, `batch_size // samples` prompts): one
prefill of the prompts, whose KV is copied to the K sample rows; then decode
steps for all B = prompts x K rows, each one CUDA-graph replay plus on-device
sampling. Rows that produced EOS keep running (static shapes) but emit pad;
the batch stops when every row is done (checked every CHECK_EVERY steps, the
only host sync in the loop) or at max_new_tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from looper_cli.generation import (Completion, OnPromptDone, SamplingConfig, completion_from_ids,
                                   length_sorted_batches)

CHECK_EVERY = 16


class FastGenerator:
    def __init__(self, model: Any, tokenizer: Any, compile_layers: bool | None = None):
        """`compile_layers`: fuse each decode layer's small kernels with
        torch.compile (default: on CUDA; costs ~a minute once per process)."""
        from looper_cli.engine.graphs import DecodeGraphs
        from looper_cli.engine.llama import LlamaRunner, base_causal_lm, is_llama_family
        from looper_cli.errors import UserError

        if not is_llama_family(model):
            kind = getattr(getattr(base_causal_lm(model), "config", None), "model_type", type(model).__name__)
            raise UserError(f"--engine fast runs Llama-family models only, not {kind!r}; use --engine auto or hf")
        self.model, self.tokenizer = model, tokenizer
        on_cuda = base_causal_lm(model).model.embed_tokens.weight.device.type == "cuda"
        self.runner = LlamaRunner(model, compile_layers=on_cuda if compile_layers is None else compile_layers)
        self.graphs = DecodeGraphs(self.runner, use_graphs=on_cuda)
        self.inputs = None

    @staticmethod
    def supports(model: Any) -> bool:
        from looper_cli.engine.llama import is_llama_family

        return is_llama_family(model)

    # -- text interface (same as HFGenerator) ------------------------------
    def generate(self, prompts: Sequence[str], cfg: SamplingConfig,
                 on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        tok = self.tokenizer
        encoded = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        results: list[list[Completion]] = [[] for _ in prompts]

        def done(i: int, rows: list[list[int]]) -> None:
            results[i] = [completion_from_ids(tok, ids) for ids in rows]
            if on_prompt_done is not None:
                on_prompt_done(i, results[i])

        self.generate_ids(encoded, cfg, done)
        return results

    # -- token interface (benchmarks use it directly) ---------------------
    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                     on_prompt_done=None) -> list[list[list[int]]]:
        """K token-id lists per prompt; each ends at (and keeps) its EOS."""
        import torch

        if not prompts:
            return []
        if cfg.max_new_tokens <= 0:
            empty: list[list[list[int]]] = [[[] for _ in range(cfg.samples)] for _ in prompts]
            for i, group in enumerate(empty):
                if on_prompt_done is not None:
                    on_prompt_done(i, group)
            return empty
        per_batch = max(1, cfg.batch_size // max(1, cfg.samples))
        batches = length_sorted_batches([len(p) for p in prompts], per_batch)
        rows = min(len(prompts), per_batch) * cfg.samples
        capacity = max(len(p) for p in prompts) + cfg.max_new_tokens
        if self.runner.ensure_cache(rows, capacity):
            self.graphs.reset()
            from looper_cli.engine.graphs import StepInputs

            self.inputs = StepInputs(rows, self.runner.device)
        results: list[list[list[int]]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for b, batch in enumerate(batches):
                    groups = self._run_batch([prompts[i] for i in batch], cfg, seed=cfg.seed + b)
                    for i, group in zip(batch, groups):
                        results[i] = group
                        if on_prompt_done is not None:
                            on_prompt_done(i, group)
        finally:
            self.model.train(was_training)
        return results

    def _ids(self) -> tuple[int, int]:
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        return eos, pad

    def _run_batch(self, prompts: list[Sequence[int]], cfg: SamplingConfig, seed: int) -> list[list[list[int]]]:
        import torch

        from looper_cli.engine.graphs import attend_bucket
        from looper_cli.engine.sampling import sample_next

        runner, k = self.runner, max(1, cfg.samples)
        device, (eos, pad) = runner.device, self._ids()
        eos_id = -1 if eos is None else eos
        gen = torch.Generator(device=device).manual_seed(seed)
        prompt_len = max(len(p) for p in prompts)
        rows = len(prompts) * k
        ids = torch.tensor([[pad] * (prompt_len - len(p)) + list(p) for p in prompts], device=device)
        starts = torch.tensor([prompt_len - len(p) for p in prompts], device=device)

        logits = runner.prefill(ids, starts, k).repeat_interleave(k, dim=0)
        token = sample_next(logits, cfg.temperature, cfg.top_p, gen)
        out = torch.full((rows, cfg.max_new_tokens), pad, dtype=torch.long, device=device)
        out[:, 0] = token
        finished = token == eos_id
        inputs = self.inputs
        inputs.starts[:rows].copy_(starts.repeat_interleave(k))
        inputs.positions[:rows].copy_(prompt_len - inputs.starts[:rows])
        inputs.write_at.fill_(prompt_len)
        for step in range(1, cfg.max_new_tokens):
            if step % CHECK_EVERY == 0 and bool(finished.all()):
                break
            inputs.tokens[:rows].copy_(token)
            logits = self.graphs.step(inputs, rows, attend_bucket(prompt_len + step, runner.capacity))
            token = sample_next(logits, cfg.temperature, cfg.top_p, gen).masked_fill_(finished, pad)
            out[:, step] = token
            finished |= token == eos_id
            inputs.positions.add_(1)
            inputs.write_at.add_(1)
        return self._split(out.tolist(), k, eos)

    @staticmethod
    def _split(rows: list[list[int]], k: int, eos: int | None) -> list[list[list[int]]]:
        """Cut each row after its EOS and group rows by prompt."""
        cut = [row[:row.index(eos) + 1] if eos in row else row for row in rows]
        return [cut[j * k:(j + 1) * k] for j in range(len(rows) // k)]
