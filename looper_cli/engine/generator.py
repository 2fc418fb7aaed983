"""`FastGenerator`: continuous batching over a paged KV cache.

The loop: the scheduler picks a round (prefill chunks of waiting prompts,
then a few decode steps of every running sequence), the runner executes it,
and the results are folded back: a prompt whose prefill completed samples
the first token of each of its K completions (forked so they share the
prompt's blocks), decode rows take their new tokens up to EOS or their
limit, and a finished sequence frees its blocks at once, so the next
round refills its row. A group is handed to `on_prompt_done` as soon as
its last completion ends.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterable, Iterator, Sequence as Seq

from looper_cli.engine.api import (Completion, EngineConfig, GenerationStats, OnPromptDone, SamplingConfig,
                                   TokenizingGenerator, check_engine_config, check_group_fits, completion_from_ids)
from looper_cli.engine.block_manager import BlockManager
from looper_cli.engine.llama import fast_engine_refusal
from looper_cli.engine.model_runner import ModelRunner
from looper_cli.engine.scheduler import Round, Scheduler
from looper_cli.engine.sequence import Group, Sequence, fork, make_group
from looper_cli.errors import UserError


@contextlib.contextmanager
def dropout_off(modules: Iterable[Any]) -> Iterator[None]:
    """The dropout modules under `modules` in eval mode, and back. The
    engine passes the modules it calls (ModelRunner.called_modules): the
    embeddings, norms, activations and lm_head (a LoRA-wrapped head has a
    dropout); decoder layers' projections run as merged weights and their
    attention is the engine's, so nothing else reads the training flag.
    Why not `model.eval()`: it walks every module, and PEFT's and
    transformers' `train()` are slow; SmolLM2 with an r=128 adapter has
    2,499 modules, and `eval()` then `train()` took 33 ms on the development
    CPU inside every ppo step; a scan of the whole model still took 9 ms of
    each generation call on an H200's host (run 19's profile)."""
    import torch

    dropouts = [m for module in modules for m in module.modules()
                if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training]
    for module in dropouts:
        module.training = False
    try:
        yield
    finally:
        for module in dropouts:
            module.training = True


class FastGenerator(TokenizingGenerator):
    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None):
        refusal = fast_engine_refusal(model)
        if refusal:
            raise UserError(refusal)
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        check_engine_config(self.config)
        self.runner = ModelRunner(model, self.config)
        self.stats = GenerationStats()

    @staticmethod
    def supports(model: Any) -> bool:
        return fast_engine_refusal(model) is None

    def generate_ids(self, prompts: Seq[Seq[int]], cfg: SamplingConfig,
                     on_prompt_done: OnPromptDone | None = None) -> list[list[Completion]]:
        import torch

        self._check(prompts, cfg)
        results: list[list[Completion]] = [[] for _ in prompts]

        def done(group: Group) -> None:
            results[group.index] = [self._completion(s, cfg) for s in group.sequences]
            if on_prompt_done is not None:
                on_prompt_done(group.index, results[group.index])

        if not prompts:
            return results
        if cfg.max_new_tokens == 0:
            for i in range(len(prompts)):
                results[i] = [Completion("", 0, False) for _ in range(cfg.group_size)]
                if on_prompt_done is not None:
                    on_prompt_done(i, results[i])
            return results
        started = time.perf_counter()
        try:
            with torch.inference_mode(), dropout_off(self.runner.called_modules()):
                self._run([make_group(i, p, cfg) for i, p in enumerate(prompts)], cfg, done)
        except torch.OutOfMemoryError:
            raise UserError("out of GPU memory while generating; lower the sequences in flight (--batch-size; "
                            "--max-seqs in ppo) or --gpu-memory-utilization; finished groups are kept") from None
        self.stats.seconds += time.perf_counter() - started
        return results

    def release(self) -> None:
        self.runner.release()

    def warm_up(self, max_len: int, top_p: bool = False) -> None:
        """Allocate the cache and capture every decode graph for sequences of
        up to `max_len` tokens now, so that no later round pays for it."""
        import torch

        with torch.inference_mode():
            self.runner.prepare(max_len)
            self.runner.capture_all(top_p)

    # -- the loop ---------------------------------------------------------
    def _run(self, groups: list[Group], cfg: SamplingConfig, done: Any) -> None:
        import torch

        longest = max(len(g.prompt) for g in groups) + cfg.max_new_tokens
        with self._timed("prepare_seconds"):
            self.runner.prepare(longest)
            if self.runner.device.type == "cuda":
                torch.cuda.synchronize(self.runner.device)  # the merged LoRA copies count here, not in prefill
        blocks = BlockManager(self.runner.num_blocks, self.config.block_size)
        if blocks.blocks_for(longest - 1) > blocks.usable_blocks:
            raise UserError(f"one sequence of {longest} tokens needs {blocks.blocks_for(longest - 1)} KV blocks "
                            f"but the cache holds {blocks.usable_blocks}; raise --gpu-memory-utilization or "
                            "--kv-cache-gib, or lower --max-new-tokens")
        scheduler = Scheduler(blocks, self.config.max_seqs, self.config.max_batched_tokens,
                              self.config.decode_steps, self.config.drain_decode_steps)
        for group in groups:
            scheduler.add(group.sequences[0])
        eos = self.tokenizer.eos_token_id
        while scheduler.has_work:
            work = scheduler.schedule()
            self.runner.copy_blocks(work.copies)
            with self._timed("prefill_seconds"):
                finished = self._prefill(work, scheduler, blocks, eos)
            with self._timed("decode_seconds"):
                finished += self._decode(work, scheduler, eos)
            for group in finished:
                done(group)
            self.stats.preemptions += work.preempted
        self.stats.kv_blocks = blocks.usable_blocks
        self.stats.peak_kv_blocks = max(self.stats.peak_kv_blocks, blocks.peak_used)

    @contextlib.contextmanager
    def _timed(self, stat: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        setattr(self.stats, stat, getattr(self.stats, stat) + time.perf_counter() - started)

    def _prefill(self, work: Round, scheduler: Scheduler, blocks: BlockManager, eos: int | None) -> list[Group]:
        """Run the prefill chunks; each sequence they complete (with its new
        forks) samples its next token and starts decoding."""
        if not work.prefill:
            return []
        logits = self.runner.prefill(work.prefill)
        self.stats.prefill_tokens += sum(c.length for c in work.prefill)
        rows, members = [], []
        for chunk in work.prefill:
            chunk.seq.num_computed = chunk.start + chunk.length
        for row, seq in enumerate(c.seq for c in work.prefill if c.completes):
            group = self._fork_members(seq, blocks) if seq.forks_on_prefill else [seq]
            rows += [row] * len(group)
            members += group
        tokens, logprobs = self.runner.sample_rows(logits[rows], members)
        finished = []
        for seq, token, logprob in zip(members, tokens, logprobs):
            scheduler.start_running(seq)
            seq.append([token], [logprob], eos)
            if seq.done:
                finished += self._finish(seq, scheduler)
        return finished

    @staticmethod
    def _fork_members(leader: Sequence, blocks: BlockManager) -> list[Sequence]:
        group = leader.group
        group.sequences += [fork(leader, i, blocks.fork(leader)) for i in range(1, group.size)]
        group.forked = True
        return group.sequences

    def _decode(self, work: Round, scheduler: Scheduler, eos: int | None) -> list[Group]:
        """Run the round's decode steps and keep each row's tokens up to its
        EOS or its last position."""
        if not work.decode:
            return []
        tokens, logprobs = self.runner.decode(work.decode, work.horizon)
        bucket = self.runner.bucket_for(len(work.decode))
        self.stats.decode_steps += work.horizon
        self.stats.decode_row_slots += bucket * work.horizon
        finished = []
        for seq, row_tokens, row_logprobs in zip(work.decode, tokens, logprobs):
            kept = seq.append(row_tokens[:min(work.horizon, seq.steps_left)], row_logprobs, eos)
            seq.num_computed += kept  # each kept token's predecessor went through the model
            self.stats.busy_rows += kept
            if seq.done:
                finished += self._finish(seq, scheduler)
        return finished

    def _finish(self, seq: Sequence, scheduler: Scheduler) -> list[Group]:
        scheduler.finish(seq)
        self.stats.useful_tokens += seq.num_generated
        seq.group.unfinished -= 1
        return [seq.group] if seq.group.unfinished == 0 else []

    def _completion(self, seq: Sequence, cfg: SamplingConfig) -> Completion:
        return completion_from_ids(self.tokenizer, seq.generated(), seq.logprobs if cfg.logprobs else None, cfg.text)

    def _check(self, prompts: Seq[Seq[int]], cfg: SamplingConfig) -> None:
        if cfg.samples < 0 or cfg.group_size < 1:
            raise UserError("a generation needs at least one completion per prompt")
        check_group_fits(cfg.group_size, self.config)
        if cfg.max_new_tokens < 0:
            raise UserError("--max-new-tokens must be 0 or more")
        if any(len(p) == 0 for p in prompts):
            raise UserError("a prompt is empty after tokenization")

