"""KV memory in fixed-size blocks with reference counts.

A sequence's `block_table` lists the blocks that hold its positions in order
(position p lives in block_table[p // block_size] at slot p % block_size).
The K completions of a prompt share the prompt's blocks: `fork` copies the
table and raises each block's count. A shared block is read-only; the first
write into a shared, partly filled last block copies it first
(copy-on-write), and the block manager hands the copy to the runner as a
(source, destination) pair.

Block 0 is never given out: rows of a CUDA graph that stand in for no
sequence write their KV there.
"""

from __future__ import annotations

from collections import deque

from looper_cli.engine.sequence import Sequence

TRASH_BLOCK = 0


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is reserved)")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.refs = [0] * num_blocks
        self.free_blocks: deque[int] = deque(range(1, num_blocks))
        self.peak_used = 0

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    @property
    def num_used(self) -> int:
        return self.usable_blocks - self.num_free

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def new_blocks_needed(self, seq: Sequence, upto: int) -> int:
        """Blocks to take so that positions [seq.num_computed, upto) can be
        written: the missing ones, plus one when the first write lands in a
        shared block (it is copied)."""
        missing = max(0, self.blocks_for(upto) - len(seq.block_table))
        return missing + (1 if self._write_needs_copy(seq, upto) else 0)

    def grow(self, seq: Sequence, upto: int, copies: list[tuple[int, int]]) -> None:
        """Give `seq` the blocks to write positions [num_computed, upto);
        the caller checked `new_blocks_needed` against `num_free`."""
        if self._write_needs_copy(seq, upto):
            index = seq.num_computed // self.block_size
            shared = seq.block_table[index]
            private = self._take()
            copies.append((shared, private))
            self.refs[shared] -= 1
            seq.block_table[index] = private
        while len(seq.block_table) < self.blocks_for(upto):
            seq.block_table.append(self._take())
        self.peak_used = max(self.peak_used, self.num_used)

    def fork(self, seq: Sequence) -> list[int]:
        """A copy of `seq`'s table for another sequence that shares its blocks."""
        for block in seq.block_table:
            self.refs[block] += 1
        return list(seq.block_table)

    def free(self, seq: Sequence) -> None:
        for block in seq.block_table:
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free_blocks.append(block)
        seq.block_table = []

    def _write_needs_copy(self, seq: Sequence, upto: int) -> bool:
        first = seq.num_computed
        index = first // self.block_size
        return (upto > first and first % self.block_size != 0 and index < len(seq.block_table)
                and self.refs[seq.block_table[index]] > 1)

    def _take(self) -> int:
        block = self.free_blocks.popleft()
        self.refs[block] = 1
        return block
