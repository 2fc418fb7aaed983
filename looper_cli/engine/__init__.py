"""The fast rollout engine: a static KV cache, CUDA-graph decode steps and
shared prefill for the K samples of a prompt, for Llama-family models.

`FastGenerator` has the same interface as `generation.HFGenerator`;
`generation.make_generator(engine="auto")` picks it for supported models on
CUDA. It also runs on CPU (eager, no graphs), which is how CI checks that its
greedy output equals transformers' token for token.

Pieces: `llama.LlamaRunner` (the forward over the static cache, calling the
HF modules so LoRA layers still apply), `sampling.sample_next`,
`graphs.DecodeGraphs` (one captured decode step per batch size and
attention-length bucket), `generator.FastGenerator` (batching and EOS).
No torch import at package import time: `looper --help` stays fast.
"""

from looper_cli.engine.generator import FastGenerator

__all__ = ["FastGenerator"]
