"""CUDA graphs of the decode step, one per (batch size, attention bucket).

Attention reads only the cache slots in use, rounded up to a bucket of
BUCKET slots, so short sequences don't pay for the whole static cache; a
batch of 384 total tokens needs at most 384/64 = 6 graphs. Graph inputs are
fixed device buffers that the generator updates in place before a replay.
"""

from __future__ import annotations

import torch

from looper_cli.engine.llama import LlamaRunner

BUCKET = 64


def attend_bucket(slots_in_use: int, capacity: int) -> int:
    return min(capacity, -(-slots_in_use // BUCKET) * BUCKET)


class StepInputs:
    """Device buffers a decode step reads: token, rope position, first real
    slot of each sequence, and the slot all sequences write this step."""

    def __init__(self, batch: int, device: torch.device):
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.starts = torch.zeros(batch, dtype=torch.long, device=device)
        self.write_at = torch.zeros((), dtype=torch.long, device=device)


class DecodeGraphs:
    def __init__(self, runner: LlamaRunner, use_graphs: bool):
        self.runner = runner
        self.use_graphs = use_graphs
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None

    def reset(self) -> None:
        """Forget graphs captured on a cache that has been reallocated. The
        memory pool goes with them: once its last graph is freed, capturing
        into the old pool trips the allocator's assert (seen on an H100 when
        one eval ran greedy, then sampled, batches of another size)."""
        self.graphs.clear()
        if self.use_graphs:
            self.pool = torch.cuda.graph_pool_handle()

    def step(self, inputs: StepInputs, batch: int, attend: int) -> torch.Tensor:
        args = (inputs.tokens[:batch], inputs.positions[:batch], inputs.starts[:batch], inputs.write_at, attend)
        if not self.use_graphs:
            return self.runner.decode(*args)
        key = (batch, attend)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
        graph, logits = self.graphs[key]
        graph.replay()
        return logits

    def _capture(self, args: tuple) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        # Warm up on a side stream (cuBLAS picks its kernels), then capture.
        # Both write this step's KV at this step's slot: the same values the
        # replay writes, so the cache is unchanged by the extra runs.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.runner.decode(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self.runner.decode(*args)
        return graph, logits
