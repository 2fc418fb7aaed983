"""GPU check: one FastGenerator serves greedy, then sampled K=8 batches of
another size (the cache is reallocated), then greedy again, as `looper eval
--samples 8` does. CUDA graphs only exist on a GPU, so CI cannot run this.

Before the graph pool was renewed with the cache, the sampled pass tripped
the caching allocator's assert during graph capture (H100, issue 8).

    python3 benchmarks/gpu_engine_reuse.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from looper_cli.engine.generator import FastGenerator
    from looper_cli.generation import SamplingConfig
    from looper_cli.models import load_model, load_tokenizer
    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import build_tiny_model

    problems = synthetic_problems(64, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(tmp, [p["question"] + "\n" + p["answer"] for p in problems])
        tokenizer = load_tokenizer(path)
        model = load_model(path, device="cuda" if torch.cuda.is_available() else "cpu")
    engine = FastGenerator(model, tokenizer)
    prompts = [p["question"] for p in problems]
    greedy = SamplingConfig(max_new_tokens=48, temperature=0.0, batch_size=64)
    sampled = SamplingConfig(max_new_tokens=96, temperature=0.8, samples=8, batch_size=256)
    first = engine.generate(prompts[:40], greedy)
    groups = engine.generate(prompts, sampled)
    again = engine.generate(prompts[:40], greedy)
    assert all(len(g) == 8 for g in groups), "every prompt gets K samples"
    same = sum(a[0].text == b[0].text for a, b in zip(first, again))
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"greedy -> sampled K=8 -> greedy on {where}: ok; "
          f"greedy repeated identically for {same}/40 prompts")
    assert same == 40


if __name__ == "__main__":
    main()
