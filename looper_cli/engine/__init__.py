"""Generation: everything that samples or decodes text goes through here.

`make_generator(model, tokenizer, engine, EngineConfig)` returns a
`Generator` (api.py): `FastGenerator` (generator.py, continuous batching over
a paged KV cache for Llama-family models) or `HFGenerator` (hf.py,
transformers' `generate`, the baseline and the path for other models).

The fast engine, one concept a file, each readable top to bottom:
`sequence` (a completion and its group), `block_manager` (KV blocks,
reference counts, copy-on-write), `scheduler` (rounds of chunked prefill and
decode, preemption), `model_runner` (the forward over the paged cache, CUDA
graphs), `attention` (paged attention: a Triton kernel and the torch
reference), `sampler` (greedy / temperature / top-p with keyed noise),
`llama` (the model's own modules), `weights` (the projection weights the
pieces multiply by: in place, or merged LoRA copies rebuilt at every call),
`graphs` (CUDA graph capture).

No torch import at package import time: `looper --help` stays fast.
"""

from looper_cli.engine.api import (Completion, Engine, EngineConfig, GenerationStats, Generator, OnPromptDone,
                                   SamplingConfig, completion_from_ids, engine_config, make_generator)

__all__ = ["Completion", "Engine", "EngineConfig", "GenerationStats", "Generator", "OnPromptDone",
           "SamplingConfig", "completion_from_ids", "engine_config", "make_generator"]
