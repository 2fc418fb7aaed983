"""Which sequences run in the next engine round, and with which memory.

A round is some prefill work, then `horizon` decode steps of every running
sequence. Rows that end are refilled at the next round: a new prompt's
prefill goes in beside the running rows (in chunks of at most
`max_batched_tokens`, so a long prompt never stalls them for long), and
its K completions start decoding one round later.

Memory: each decode row gets the blocks for the positions it writes this
round. When the free blocks do not cover that, the most recently started
sequences are preempted: their blocks are freed and they go back to the
front of the queue, to be recomputed from their tokens later (their
samples do not change: the noise is keyed by position). A prompt is only
admitted when its blocks fit beside a reserve, so admission does not
immediately cause preemption.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from looper_cli.engine.block_manager import BlockManager
from looper_cli.engine.sequence import Sequence, Status


@dataclass
class Chunk:
    """Prefill of seq's tokens [start, start + length)."""

    seq: Sequence
    start: int
    length: int

    @property
    def completes(self) -> bool:
        """Whether this chunk reaches the sequence's last token (then the next one is sampled)."""
        return self.start + self.length == len(self.seq.token_ids)


@dataclass
class Round:
    prefill: list[Chunk] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)
    horizon: int = 0  # decode steps
    copies: list[tuple[int, int]] = field(default_factory=list)  # (shared block, private copy)
    preempted: int = 0

    @property
    def empty(self) -> bool:
        return not self.prefill and not self.decode


class Scheduler:
    def __init__(self, blocks: BlockManager, max_seqs: int, max_batched_tokens: int, horizon: int,
                 drain_horizon: int | None = None):
        self.blocks = blocks
        self.max_seqs = max_seqs
        self.max_batched_tokens = max_batched_tokens
        self.horizon = horizon  # decode steps a round while prompts wait for a seat
        self.drain_horizon = drain_horizon or horizon  # ... once none waits
        self.waiting: deque[Sequence] = deque()  # not yet prefilled, first in line first
        self.running: list[Sequence] = []  # prefilled, in the order they started
        self.reserve = max(1, blocks.usable_blocks // 100)  # blocks kept free when admitting a prompt

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Round:
        work = Round()
        self._schedule_decode(work)
        self._schedule_prefill(work)
        if work.empty and self.waiting:
            self._unblock(work)
        return work

    def start_running(self, seq: Sequence) -> None:
        seq.status = Status.RUNNING
        self.running.append(seq)

    def finish(self, seq: Sequence) -> None:
        seq.status = Status.FINISHED
        self.blocks.free(seq)
        self.running.remove(seq)

    # -- decode ---------------------------------------------------------
    def _schedule_decode(self, work: Round) -> None:
        if not self.running:
            return
        horizon = self.horizon if self.waiting else self.drain_horizon
        work.horizon = min(horizon, max(s.steps_left for s in self.running))
        while self.running:
            need = sum(self.blocks.new_blocks_needed(s, self._write_end(s, work.horizon)) for s in self.running)
            if need <= self.blocks.num_free:
                break
            self._preempt(self.running[-1], work)
        for seq in self.running:
            self.blocks.grow(seq, self._write_end(seq, work.horizon), work.copies)
        work.decode = list(self.running)
        if not work.decode:
            work.horizon = 0

    @staticmethod
    def _write_end(seq: Sequence, horizon: int) -> int:
        """One past the last position this sequence writes in `horizon` steps."""
        return min(seq.num_computed + horizon, seq.last_writable_position + 1)

    def _preempt(self, seq: Sequence, work: Round) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        work.preempted += 1

    # -- prefill --------------------------------------------------------
    def _schedule_prefill(self, work: Round) -> None:
        budget = self.max_batched_tokens
        seats = self.max_seqs - len(self.running)
        for seq in list(self.waiting):
            if budget <= 0 or seq.seats > seats:
                break
            length = min(seq.num_pending, budget)
            upto = seq.num_computed + length
            need = self.blocks.new_blocks_needed(seq, upto)
            if need + self._reserve_for(seq) > self.blocks.num_free:
                break
            self.blocks.grow(seq, upto, work.copies)
            work.prefill.append(Chunk(seq, seq.num_computed, length))
            budget -= length
            if upto == len(seq.token_ids):
                seats -= seq.seats
                self.waiting.remove(seq)  # prefilled this round: the engine starts it running

    def _reserve_for(self, seq: Sequence) -> int:
        """Free blocks to leave after admitting `seq`: none when nothing else
        runs (it must be able to start), else a small reserve for growth."""
        return 0 if not self.running and seq is self.waiting[0] else self.reserve

    def _unblock(self, work: Round) -> None:
        """Nothing could run: free the blocks of partly prefilled sequences
        behind the first one, which then fits (each sequence was checked to
        fit the cache alone)."""
        for seq in list(self.waiting)[1:]:
            if seq.block_table:
                self.blocks.free(seq)
                seq.num_computed = 0
                work.preempted += 1
        self._schedule_prefill(work)
        if work.empty:
            raise RuntimeError("the engine scheduled nothing although work is waiting")
