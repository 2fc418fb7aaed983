"""GPU figures for looper, each beside its baseline measured in the same run.

    python benchmarks/bench_gpu.py all --out results/          # one H100/H200
    python benchmarks/bench_gpu.py scaling --gpus 2,4 --questions 512   # 1 vs 2 vs 4 engine processes
    python benchmarks/bench_gpu.py train --train-variants liger+compile-mem0.5-b8   # one variant a process

The generation engine's own figures are in benchmarks/bench_engine.py.
Sections: `train` (LoRA SFT and DPO tokens/s, memory and MFU; benchmarks/gpu_train.py);
`scaling` (1 GPU vs N GPUs, one engine process per GPU). Models are random-init
Llamas of the real shape (benchmarks/gpu_models.py). Prints one table last;
`--out DIR` also writes DIR/bench_gpu.json. `all` runs gpu_train's default
training variants (several minutes): pick some with `--train-variants a,b` ("" for none);
a compile memory budget is read once per process, so time each budget in its own.
Training needs liger-kernel (see docs/perf-notes.md for the device setup).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import device_name, finish, record, random_prompts, sync  # noqa: E402
from gpu_models import build_llama, id_tokenizer  # noqa: E402

# -- scaling: N engine processes on N GPUs over sharded questions -------------
def section_scaling(args) -> None:
    note = f"{args.questions} q x 8, {args.workload_new_tokens} new; warm generation time, slowest shard"
    single = run_shards(args, 1)
    record("scaling", "1 GPU", single, "gen tok/s", note)
    for gpus in [int(n) for n in str(args.gpus).split(",")]:
        multi = run_shards(args, gpus)
        record("scaling", f"{gpus} GPUs", multi, "gen tok/s", note)
        record("scaling", f"{gpus} GPUs: efficiency = rate_N / (N x rate_1)", multi / (gpus * single), "", note)


def run_shards(args, gpus: int) -> float:
    """Total generated tokens over the slowest shard's generation time."""
    procs = []
    for gpu in range(gpus):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        cmd = [sys.executable, __file__, "worker", "--shard", f"{gpu}/{gpus}", "--questions", str(args.questions),
               "--workload-new-tokens", str(args.workload_new_tokens), "--workload-batch", str(args.workload_batch),
               "--shape", args.shape]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        assert proc.returncode == 0, f"worker failed ({proc.returncode})"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return sum(r["tokens"] for r in results) / max(r["seconds"] for r in results)


def section_worker(args) -> None:
    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.generator import FastGenerator

    index, count = map(int, args.shard.split("/"))
    model = build_llama(args.shape, "cuda")
    prompts = random_prompts(args.questions, 100, 200, model.config.vocab_size, seed=2)[index::count]
    cfg = SamplingConfig(max_new_tokens=args.workload_new_tokens, temperature=0.8, samples=8, seed=index)
    engine = FastGenerator(model, id_tokenizer(), EngineConfig(max_seqs=args.workload_batch))
    # Compile and capture every graph first (~15 s cold on an H200), so that a
    # compile cache left by an earlier run cannot favour one side of the
    # comparison: the figures are steady-state throughput.
    engine.warm_up(200 + cfg.max_new_tokens)
    sync()
    start = time.perf_counter()
    groups = engine.generate_ids(prompts, cfg)
    sync()
    tokens = sum(len(c.token_ids) for g in groups for c in g)
    print(json.dumps(dict(seconds=time.perf_counter() - start, tokens=tokens)), flush=True)


# -- output ------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["all", "train", "scaling", "worker"])
    parser.add_argument("--shape", default="8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--workload-new-tokens", type=int, default=256)
    parser.add_argument("--workload-batch", type=int, default=512)
    parser.add_argument("--train-variants", default="all")
    parser.add_argument("--train-profile", action="store_true", help="train: profile one step per variant")
    parser.add_argument("--gpus", default="2", help="scaling: GPU counts to compare with 1, e.g. 2,4")
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.section == "worker":
        return section_worker(args)

    device = device_name(args.device)
    if args.section in ("all", "train"):
        from gpu_train import section_train

        section_train(args, record)
    if args.section == "scaling":
        section_scaling(args)
    finish("looper GPU benchmark", device, args.out, "bench_gpu.json")


if __name__ == "__main__":
    main()
