"""CUDA graphs: a function's kernels recorded once and replayed with one
launch. Used for each decode step (model_runner) and for rebuilding the
merged LoRA copies (weights), where a few hundred tiny kernels would
otherwise cost more in launches than on the GPU.

A graph replays the recorded kernels on the recorded addresses: what it
reads must be updated in place (the optimizer does so for parameters), and
anything reallocated needs a new capture.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch


def capture(fn: Callable[[], Any], pool: Any = None, after_warm_up: Optional[Callable[[], None]] = None) -> Any:
    """Run `fn` once on a side stream (torch.compile compiles, cuBLAS picks
    its kernels and workspace), call `after_warm_up` (to undo what the
    warm-up wrote), then capture `fn` into a graph in memory pool `pool`."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    if after_warm_up is not None:
        after_warm_up()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        fn()
    return graph
