"""Prepare a model folder for timing `looper rollout --gpus N` end to end:
a random-init 8B-shape Llama (bf16 safetensors) plus the tiny BPE tokenizer
trained on synthetic problems (ids past its vocabulary decode to nothing,
which is fine for timing: the model still computes the full 128256-way head).

    python benchmarks/gpu_rollout_cli.py /tmp/m8b
    looper rollout --base-model /tmp/m8b --data synthetic:256 --samples 8 \\
        --max-new-tokens 256 --batch-size 512 --gpus 2 --output /tmp/r2/rollouts.jsonl
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(out: Path) -> None:
    from gpu_models import build_llama

    from looper_cli.synthetic import synthetic_problems
    from looper_cli.tiny import train_tokenizer

    start = time.perf_counter()
    rows = synthetic_problems(300, seed=0)
    tokenizer = train_tokenizer([r["question"] + "\n" + r["answer"] for r in rows], 1024)
    model = build_llama("8b", "cuda")
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"saved {out} in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
