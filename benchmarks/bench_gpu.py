"""GPU figures for looper, each beside its baseline measured in the same run.

    python benchmarks/bench_gpu.py all --out results/          # one H100/H200
    python benchmarks/bench_gpu.py scaling --gpus 2,4 --questions 512   # 1 vs 2 vs 4 engine processes
    python benchmarks/bench_gpu.py train --train-variants liger+compile-mem0.5-b8   # one variant a process
    python benchmarks/bench_gpu.py rollout --shape small --device cpu   # smoke run, no GPU

Sections: `check` (greedy of the engine, with graphs and compile, equals
transformers' greedy; small fp32 model); `step` (one decode step, graph
replay, with and without compiled layers); `rollout` (transformers `generate` vs FastGenerator, 8B shape,
256 sequences = 32 prompts x 8 samples, 128-token prompts, 256 new tokens,
sampling T=0.8); `workload` (500 questions x 8 samples with FastGenerator);
`train` (LoRA SFT and DPO tokens/s, memory and MFU; benchmarks/gpu_train.py);
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

from gpu_models import EOS, PAD, build_llama, id_tokenizer  # noqa: E402

ROWS: list[dict] = []


def record(section: str, what: str, value: float, unit: str, note: str = "") -> None:
    row = dict(section=section, what=what, value=round(value, 3), unit=unit, note=note)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_prompts(n: int, low: int, high: int, vocab: int, seed: int) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(low, high))] for _ in range(n)]


def generated_tokens(groups) -> int:
    return sum(len(ids) for group in groups for ids in group)


# -- check: greedy on the device (CUDA graphs) equals transformers' greedy ----
def section_check(args) -> None:
    import torch

    from looper_cli.engine import FastGenerator
    from looper_cli.generation import SamplingConfig

    model = build_llama("small", args.device, "float32")
    prompts = random_prompts(12, 5, 40, model.config.vocab_size, seed=3)
    cfg = SamplingConfig(max_new_tokens=32, temperature=0, samples=1, batch_size=5)
    got = [g[0] for g in FastGenerator(model, id_tokenizer()).generate_ids(prompts, cfg)]
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts], device=args.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=args.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=32,
                             pad_token_id=PAD, eos_token_id=EOS)[:, width:].tolist()
    want = [row[:row.index(EOS) + 1] if EOS in row else row for row in out]
    same = sum(a == b for a, b in zip(got, want))
    record("check", "greedy == transformers (small fp32, graphs)", same / len(prompts) * 100, "% seqs",
           f"{len(prompts)} prompts of 5-40 tokens, 32 new, batches of 5")


# -- step: one decode step, graph replay, with and without compiled layers ----
def section_step(model, args) -> None:
    import torch

    from looper_cli.engine.graphs import DecodeGraphs, StepInputs
    from looper_cli.engine.llama import LlamaRunner

    rows, attend = args.prompts * args.samples, args.prompt_len + args.new_tokens // 2 + 64
    for compiled in (False, True):
        runner = LlamaRunner(model, compile_layers=compiled)
        runner.ensure_cache(rows, args.prompt_len + args.new_tokens)
        inputs = StepInputs(rows, runner.device)
        inputs.tokens.random_(3, model.config.vocab_size)
        inputs.positions.fill_(attend - 1)
        inputs.write_at.fill_(attend - 1)
        graphs = DecodeGraphs(runner, use_graphs=True)
        with torch.inference_mode():
            graphs.step(inputs, rows, attend)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(50):
                graphs.step(inputs, rows, attend)
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / 50 * 1000
        record("step", f"decode step graph replay, compiled={compiled}", ms, "ms",
               f"{rows} rows, attending {attend} slots; {rows / ms * 1000:,.0f} tok/s if nothing else ran")
        del graphs, runner, inputs
        torch.cuda.empty_cache()


# -- rollout: transformers generate vs FastGenerator -------------------------
def hf_generate(model, prompts, samples: int, new_tokens: int, device: str) -> tuple[float, int]:
    import torch

    ids = torch.tensor(prompts, device=device)  # equal lengths: no padding needed
    kwargs = dict(do_sample=True, temperature=0.8, top_p=1.0, top_k=0, num_return_sequences=samples,
                  pad_token_id=PAD, eos_token_id=EOS)
    with torch.inference_mode():
        model.generate(ids[:2], attention_mask=torch.ones_like(ids[:2]), max_new_tokens=4, **kwargs)
        sync(device)
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, **kwargs)
        sync(device)
    seconds = time.perf_counter() - start
    new = out[:, ids.shape[1]:]
    # Count up to and including the first EOS (what a user gets back).
    tokens = sum(row.index(EOS) + 1 if EOS in row else len(row) for row in new.tolist())
    return seconds, tokens


def fast_generate(engine, prompts, cfg, device: str) -> tuple[float, int]:
    sync(device)
    start = time.perf_counter()
    groups = engine.generate_ids(prompts, cfg)
    sync(device)
    return time.perf_counter() - start, generated_tokens(groups)


def section_rollout(model, args) -> None:
    from looper_cli.engine import FastGenerator
    from looper_cli.generation import SamplingConfig

    vocab = model.config.vocab_size
    prompts = random_prompts(args.prompts, args.prompt_len, args.prompt_len, vocab, seed=1)
    seqs = args.prompts * args.samples
    shape = f"{seqs} seqs = {args.prompts} prompts x {args.samples}, {args.prompt_len}+{args.new_tokens} tok"
    if not args.skip_hf:
        seconds, tokens = hf_generate(model, prompts, args.samples, args.new_tokens, args.device)
        record("rollout", "transformers generate (dynamic cache)", tokens / seconds, "gen tok/s", shape)
        hf_rate = tokens / seconds
    engine = FastGenerator(model, id_tokenizer())
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.8, top_p=1.0, samples=args.samples,
                         batch_size=seqs, seed=0)
    cold, _ = fast_generate(engine, prompts, cfg, args.device)
    record("rollout", "FastGenerator first call (graph capture incl.)", cold, "s", shape)
    for top_p in (1.0, 0.95):
        cfg.top_p = top_p
        seconds, tokens = fast_generate(engine, prompts, cfg, args.device)
        record("rollout", f"FastGenerator top_p={top_p}", tokens / seconds, "gen tok/s", shape)
        if top_p == 1.0 and not args.skip_hf:
            record("rollout", "speed-up over transformers generate", tokens / seconds / hf_rate, "x", shape)


# -- workload: 500 questions x 8 samples -------------------------------------
def section_workload(model, args) -> None:
    from looper_cli.engine import FastGenerator
    from looper_cli.generation import SamplingConfig

    # GSM8K chat prompts are ~100-200 tokens; random models never stop early,
    # so every sequence runs to max_new_tokens (the worst case).
    prompts = random_prompts(args.questions, 100, 200, model.config.vocab_size, seed=2)
    cfg = SamplingConfig(max_new_tokens=args.workload_new_tokens, temperature=0.8, samples=8,
                         batch_size=args.workload_batch, seed=0)
    engine = FastGenerator(model, id_tokenizer())
    seconds, tokens = fast_generate(engine, prompts, cfg, args.device)
    shape = (f"{args.questions} q x 8, prompts 100-200, {cfg.max_new_tokens} new, "
             f"batch {cfg.batch_size} seqs")
    record("workload", f"{args.questions}x8 wall (engine, incl. graph capture)", seconds, "s", shape)
    record("workload", f"{args.questions}x8 throughput", tokens / seconds, "gen tok/s", shape)


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
    from looper_cli.engine import FastGenerator
    from looper_cli.generation import SamplingConfig

    index, count = map(int, args.shard.split("/"))
    model = build_llama(args.shape, "cuda")
    prompts = random_prompts(args.questions, 100, 200, model.config.vocab_size, seed=2)[index::count]
    cfg = SamplingConfig(max_new_tokens=args.workload_new_tokens, temperature=0.8, samples=8,
                         batch_size=args.workload_batch, seed=index)
    engine = FastGenerator(model, id_tokenizer())
    # Warm up on one batch first (compile + graph capture, ~12 s cold on an
    # H200), so that a compile cache left by an earlier run cannot favour
    # one side of the comparison: the figures are steady-state throughput.
    fast_generate(engine, prompts[:cfg.batch_size // cfg.samples], cfg, "cuda")
    seconds, tokens = fast_generate(engine, prompts, cfg, "cuda")
    print(json.dumps(dict(seconds=seconds, tokens=tokens)), flush=True)


# -- output ------------------------------------------------------------------
def print_table(device_name: str) -> None:
    print(f"\n=== looper GPU benchmark on {device_name} ===")
    print(f"{'section':9} {'what':52} {'value':>12} {'unit':10} note")
    for r in ROWS:
        print(f"{r['section']:9} {r['what']:52} {r['value']:>12,.2f} {r['unit']:10} {r['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["all", "check", "step", "rollout", "workload", "train", "scaling", "worker"])
    parser.add_argument("--shape", default="8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip-hf", action="store_true")
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

    import torch

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {device_name}; torch {torch.__version__}", flush=True)
    if args.section in ("all", "check"):
        section_check(args)
    if args.section in ("all", "step", "rollout", "workload"):
        start = time.perf_counter()
        model = build_llama(args.shape, args.device, "bfloat16" if args.device != "cpu" else "float32")
        record("setup", f"build {args.shape} model on {args.device}", time.perf_counter() - start, "s")
        if args.section in ("all", "step"):
            section_step(model, args)
        if args.section in ("all", "rollout"):
            section_rollout(model, args)
        if args.section in ("all", "workload"):
            section_workload(model, args)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.section in ("all", "train"):
        from gpu_train import section_train

        section_train(args, record)
    if args.section == "scaling":
        section_scaling(args)
    print_table(device_name)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_gpu.json").write_text(json.dumps(dict(device=device_name, rows=ROWS), indent=1))


if __name__ == "__main__":
    main()
