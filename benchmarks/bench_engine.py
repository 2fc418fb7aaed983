"""Generation figures (issue 14): the paged engine beside the static-batch
engine it replaced and transformers `generate`, measured in the same run, on
a realistic length distribution. Only useful tokens count: those up to and
including EOS, what a caller gets back.

    bash scripts/static_engine.sh            # the old engine from git history -> .gpu/static_engine
    PYTHONPATH=.gpu python benchmarks/bench_engine.py all --out DIR
    PYTHONPATH=.gpu python benchmarks/bench_engine.py real --model SmolLM2.gguf --data gsm8k/train.jsonl

Sections:
  step       where a decode step's time goes (--step-shape, default SmolLM2's): one graph
             replay against the wall time per step of a generation, with and without a
             LoRA adapter (--profile: the kernels of one step).
  check      greedy of the paged engine on the GPU (CUDA graphs, compiled
             layers) equals transformers' greedy, also with a cache so small
             that sequences are preempted, and with a LoRA adapter before and
             after an in-place update; samples do not depend on the cache.
  attention  one decode attention call (--attention-shape 8b or smol), in a CUDA graph: our
             Triton kernel by --tiles and --warps, by context (checked against the torch
             gather + SDPA).
  sdpa       prefill attention's first call at a new shape: torch's default backends
             vs the engine's (cuDNN excluded).
  rollout    8B shape, random init; a bias on the EOS logit (calibrated so a
             sampled sequence stops with probability --hazard per step) gives
             geometric lengths like real samples. 128 prompts x 8, 128-token
             prompts, T = 0.8, cap 1,024. Paged engine vs static engine vs
             transformers (on the first --hf-prompts prompts: it is slow).
  real       a real model (SmolLM2-135M-Instruct GGUF) on GSM8K questions with
             its chat template: paged vs static vs transformers (a subset).
Prints one table last; --out DIR writes DIR/bench_engine.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import device_name, finish, record, random_prompts, timed  # noqa: E402
from gpu_models import EOS, build_llama, id_tokenizer  # noqa: E402

def useful(ids: list[int], eos: int) -> int:
    return ids.index(eos) + 1 if eos in ids else len(ids)


# -- the three generators, one call each -------------------------------------
def run_paged(model, tok, prompts, args, max_seqs: int, cap: int):
    """(seconds, useful tokens, stats) of one warm paged-engine call."""
    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.generator import FastGenerator

    engine = FastGenerator(model, tok, EngineConfig(max_seqs=max_seqs, gpu_memory_utilization=args.gpu_util))
    cold, _ = timed(lambda: engine.warm_up(max(map(len, prompts)) + cap))
    cfg = SamplingConfig(max_new_tokens=cap, temperature=args.temperature, samples=args.samples, seed=0)
    engine.generate_ids(prompts[:8], SamplingConfig(max_new_tokens=8, temperature=args.temperature,
                                                    samples=args.samples))  # sampler and prefill compiled
    engine.stats.reset()
    seconds, groups = timed(lambda: engine.generate_ids(prompts, cfg))
    tokens = sum(len(c.token_ids) for g in groups for c in g)
    lengths = [len(c.token_ids) for g in groups for c in g]
    stats = engine.stats.as_dict()
    stats.update(startup_s=round(cold, 1), mean_len=sum(lengths) / len(lengths), longest=max(lengths))
    engine.release()
    del engine
    return seconds, tokens, stats


def run_static(model, tok, prompts, args, batch: int, cap: int):
    """The engine of commit 6987188: a batch decodes until its longest row ends."""
    from static_engine import FastGenerator as StaticGenerator
    from static_engine.generation import SamplingConfig as StaticConfig

    engine = StaticGenerator(model, tok)
    cfg = StaticConfig(max_new_tokens=cap, temperature=args.temperature, samples=args.samples, seed=0,
                       batch_size=batch)
    cold, _ = timed(lambda: engine.generate_ids(prompts[:batch // args.samples], cfg))  # compile + capture
    seconds, groups = timed(lambda: engine.generate_ids(prompts, cfg))
    tokens = sum(useful(ids, tok.eos_token_id) for g in groups for ids in g)
    steps = sum(max(len(ids) for g in groups[i:i + batch // args.samples] for ids in g)
                for i in range(0, len(groups), batch // args.samples))
    stats = dict(startup_s=round(cold, 1), slot_use=round(tokens / (steps * batch), 4))
    del engine
    return seconds, tokens, stats


def run_hf(model, tok, prompts, args, cap: int):
    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.hf import HFGenerator

    engine = HFGenerator(model, tok, EngineConfig(max_seqs=len(prompts) * args.samples))
    engine.generate_ids(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=args.temperature, samples=2))
    cfg = SamplingConfig(max_new_tokens=cap, temperature=args.temperature, samples=args.samples, seed=0)
    seconds, groups = timed(lambda: engine.generate_ids(prompts, cfg))
    return seconds, sum(len(c.token_ids) for g in groups for c in g), {}


def compare(section: str, model, tok, prompts, args, cap: int, note: str) -> None:
    paged = {}
    for max_seqs in args.max_seqs:
        seconds, tokens, stats = run_paged(model, tok, prompts, args, max_seqs, cap)
        paged[max_seqs] = tokens / seconds
        record(section, f"paged engine, {max_seqs} seqs in flight", tokens / seconds, "useful tok/s",
               f"{note}; {seconds:.1f} s; " + ", ".join(f"{k} {v}" for k, v in stats.items()
                                                        if k not in ("seconds", "useful_tokens_per_s")))
    best = max(paged.values())
    if not args.skip_static:
        seconds, tokens, stats = run_static(model, tok, prompts, args, args.static_batch, cap)
        record(section, f"static engine (6987188), batch {args.static_batch}", tokens / seconds, "useful tok/s",
               f"{note}; {seconds:.1f} s; slot use {stats['slot_use']}; startup {stats['startup_s']} s")
        record(section, "paged / static", best / (tokens / seconds), "x", note)
    if args.hf_prompts:
        subset = prompts[:args.hf_prompts]
        seconds, tokens, _ = run_hf(model, tok, subset, args, cap)
        record(section, f"transformers generate, {len(subset)} prompts x {args.samples}", tokens / seconds,
               "useful tok/s", f"{note}; first {len(subset)} prompts only; {seconds:.1f} s")
        record(section, "paged / transformers", best / (tokens / seconds), "x", note)


# -- EOS bias: realistic lengths from a random model --------------------------
def calibrate_eos_bias(model, prompts, temperature: float, hazard: float) -> float:
    """The bias on the EOS logit that makes EOS the sampled token with
    probability `hazard` (mean over the prompts' last positions)."""
    import torch

    ids = torch.tensor(prompts[:64], device=model.device)
    with torch.inference_mode():
        logits = model(ids).logits[:, -1].float()
    low, high = 0.0, 60.0
    for _ in range(50):
        bias = (low + high) / 2
        shifted = logits.clone()
        shifted[:, EOS] += bias
        p = torch.softmax(shifted / temperature, dim=-1)[:, EOS].mean().item()
        low, high = (bias, high) if p < hazard else (low, bias)
    return (low + high) / 2


def add_eos_bias(model, bias: float):
    def hook(_module, _inputs, output):
        output[..., EOS] += bias
        return output

    return model.lm_head.register_forward_hook(hook)


# -- sections ------------------------------------------------------------------
ATTENTION_SHAPES = {"8b": (32, 8, 128), "smol": (9, 3, 64)}  # query heads, KV heads, head dim

def section_check(args) -> None:
    import torch
    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.generator import FastGenerator
    from looper_cli.engine.hf import HFGenerator

    model = build_llama("small", "cuda", "float32")
    tok = id_tokenizer()
    import random

    rng = random.Random(3)
    prompts = [[rng.randrange(3, 512) for _ in range(rng.randint(5, 40))] for _ in range(24)]
    greedy = SamplingConfig(max_new_tokens=48, temperature=0)
    want = [g[0].token_ids for g in HFGenerator(model, tok, EngineConfig(max_seqs=24)).generate_ids(prompts, greedy)]
    for name, config in (("roomy", EngineConfig(max_seqs=8)),
                         ("tight: preempts", EngineConfig(max_seqs=8, num_blocks=24, block_size=16))):
        engine = FastGenerator(model, tok, config)
        got = [g[0].token_ids for g in engine.generate_ids(prompts, greedy)]
        record("check", f"greedy == transformers ({name})", 100 * sum(a == b for a, b in zip(got, want)) / len(want),
               "% seqs", f"small fp32, graphs + compile, 24 prompts, 48 new; preemptions {engine.stats.preemptions}")
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(build_llama("small", "cuda", "float32"),
                          LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    engine = FastGenerator(lora, tok, EngineConfig(max_seqs=8))
    for when in ("", ", after an in-place update"):
        if when:  # as an optimizer step: the captured merge must read the new values
            with torch.no_grad():
                for name, param in lora.named_parameters():
                    if "lora_" in name:
                        param.mul_(1.5)
        want = [g[0].token_ids for g in HFGenerator(lora, tok, EngineConfig(max_seqs=24)).generate_ids(prompts, greedy)]
        got = [g[0].token_ids for g in engine.generate_ids(prompts, greedy)]
        record("check", f"greedy == transformers (LoRA r=8, fused copies{when})",
               100 * sum(a == b for a, b in zip(got, want)) / len(want), "% seqs", "small fp32, all-linear, B non-zero")
    del lora, engine
    for top_p in (0.9, 1.0):  # torch's sampler, then the Triton one
        sampled = SamplingConfig(max_new_tokens=48, temperature=1.0, top_p=top_p, samples=4, seed=5)
        runs = [[c.token_ids for g in FastGenerator(model, tok, config).generate_ids(prompts, sampled) for c in g]
                for config in (EngineConfig(max_seqs=96), EngineConfig(max_seqs=8, num_blocks=24, block_size=16))]
        record("check", f"samples equal across caches (top_p {top_p})",
               100 * sum(a == b for a, b in zip(*runs)) / len(runs[0]), "% seqs", "96 rows vs 8 rows with preemption")


def section_step(args) -> None:
    """Where a decode step's time goes: one graph replay (GPU time of the
    step, padding rows) against the wall time per decode step of a whole
    generation (replays plus host work between rounds), with and without
    an unmerged LoRA adapter, on the --step-shape."""
    import torch
    import triton.testing
    from peft import LoraConfig, get_peft_model

    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.generator import FastGenerator

    model = build_llama(args.step_shape, "cuda")
    prompts = random_prompts(max(args.step_rows), 128, 128, model.config.vocab_size, seed=4)
    for lora in (False, True):
        if str(lora).lower() not in args.step_adapters:
            continue
        if lora:
            model = get_peft_model(model, LoraConfig(r=args.step_lora_r, lora_alpha=2 * args.step_lora_r,
                                                     target_modules="all-linear"))
        for rows in args.step_rows:
            engine = FastGenerator(model, id_tokenizer(), EngineConfig(max_seqs=rows))
            engine.warm_up(128 + 256)
            runner = engine.runner
            with torch.inference_mode():
                runner._fill_inputs([], rows)
                replay = triton.testing.do_bench(lambda: runner._run_step(rows, False), return_mode="median")
                if args.profile:
                    print_kernels(lambda: runner._run_step(rows, False), f"{rows} rows, lora {lora}")
            # --step-samples K: rows / K prompts, K samples each sharing their prompt's blocks, as in ppo.
            cfg = SamplingConfig(max_new_tokens=256, temperature=0.8, samples=args.step_samples)
            step_prompts = prompts[:rows // args.step_samples]
            engine.generate_ids(step_prompts, cfg)  # prefill and sampler shapes compiled
            engine.stats.reset()
            seconds, _ = timed(lambda: engine.generate_ids(step_prompts, cfg))
            wall = seconds / max(1, engine.stats.decode_steps) * 1000
            if args.profile:  # real contexts (128 to 384 positions), host work between rounds
                steps = engine.stats.decode_steps
                busy = print_kernels(lambda: engine.generate_ids(step_prompts, cfg),
                                     f"{rows} rows, lora {lora}, a whole generation, per decode step", repeats=steps,
                                     calls=1)
                record("step", f"{rows} rows: GPU busy per decode step (whole generation)", busy / 1000, "ms",
                       f"kernel time of the generation (prefill included) / {steps} decode steps")
            note = f"{args.step_shape} random init, {'LoRA r=%d' % args.step_lora_r if lora else 'no adapter'}"
            record("step", f"{rows} rows: graph replay", replay, "ms", note)
            record("step", f"{rows} rows: wall per decode step", wall, "ms",
                   f"{note}; 128-token prompts x {args.step_samples} samples, 256 new tokens, no EOS; "
                   f"{engine.stats.decode_steps} steps")
            del engine
            torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()


def print_kernels(step, label: str, repeats: int = 5, calls: int | None = None) -> float:
    """The GPU kernels of one `step` (a graph replay), by total time: what a
    decode step is made of. `step` runs `calls` times (default `repeats`),
    figures are per `repeats`; returns the kernel microseconds per repeat."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats if calls is None else calls):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.count]
    kernels.sort(key=lambda e: -e.device_time_total)
    count, total = sum(e.count for e in kernels) / repeats, sum(e.device_time_total for e in kernels) / repeats
    print(f"-- kernels of one decode step ({label}): {count:.0f} kernels, {total:.0f} us of kernel time")
    for e in kernels[:14]:
        print(f"   {e.count / repeats:5.0f} x {e.device_time_total / e.count:7.2f} us  {e.key[:90]}")
    return total


def section_attention(args) -> None:
    """One decode attention call (bf16, random cache) as a decode step runs it: in decode mode (the
    fed token's key and value stored by the kernel, rope applied in it), inside a CUDA graph (a
    launch from Python costs more than the kernel), timed per call over 30 calls a replay, by
    --tiles and --warps; each checked against rope + write_kv + the torch gather + SDPA (which
    syncs with the host, so it cannot be captured: run 17 measured it at 360 us for 64 rows)."""
    import torch

    from looper_cli.engine.attention import paged_decode_reference, paged_decode_triton, write_kv
    from looper_cli.engine.llama import rotate

    rows, block, calls = args.attention_rows, 16, 30
    heads, kv, dim = ATTENTION_SHAPES[args.attention_shape]
    for context in args.contexts:
        width = -(-context // block)
        blocks = rows * width + 1
        q = torch.randn(rows, heads, dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(blocks, block, kv, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        tables = (torch.randperm(blocks - 1, device="cuda")[:rows * width] + 1).reshape(rows, width).int()
        lens = torch.randint(context // 2, context + 1, (rows,), device="cuda", dtype=torch.int32)
        at = (lens - 1).long()
        slots = tables.gather(1, (at // block)[:, None]).squeeze(1).long() * block + at % block
        k_new, v_new = torch.randn(2, rows, kv, dim, device="cuda", dtype=torch.bfloat16)
        angles = torch.randn(rows, 1, dim // 2, device="cuda")
        rope = tuple(torch.cat([f(angles)] * 2, dim=-1).to(torch.bfloat16) for f in (torch.cos, torch.sin))
        want_k, want_v = k.clone(), v.clone()
        write_kv(want_k, want_v, slots, rotate(k_new, *rope), v_new)
        want = paged_decode_reference(rotate(q, *rope), want_k, want_v, tables, lens, dim ** -0.5).float()
        kv_bytes = 2 * int(lens.sum()) * kv * dim * 2
        note = f"{rows} rows, {heads} heads / {kv} kv, d {dim}, contexts U[{context // 2}, {context}]"
        for tile in args.tiles:
            for warps in args.warps:
                def attend():
                    return paged_decode_triton(q, k, v, tables, lens, dim ** -0.5, (k_new, v_new, slots), tile=tile,
                                               rope=rope, warps=warps)

                error = (attend().float() - want).abs().max().item()
                ms = in_graph_ms(attend, calls)
                record("attention", f"triton paged kernel, tile {tile or 'default'}, {warps or 'default'} warps, "
                       f"context {context}",
                       ms * 1000, "us", f"{note}; {kv_bytes / ms / 1e9:.2f} TB/s of KV read; max |diff| "
                       f"{error:.1e}; decode mode, in a CUDA graph")
        del q, k, v
        torch.cuda.empty_cache()


def int_list(text: str) -> list[int]:
    """A comma list of integers (an argparse type)."""
    return [int(x) for x in text.split(",")]


def in_graph_ms(fn, calls: int) -> float:
    """Milliseconds per call of `fn` replayed inside one CUDA graph of `calls` calls."""
    import triton.testing

    from looper_cli.engine.graphs import capture

    graph = capture(lambda: [fn() for _ in range(calls)])
    return triton.testing.do_bench(graph.replay, return_mode="median") / calls


def section_sdpa(args) -> None:
    """Prefill attention's first call at a new shape (masked SDPA, bf16, GQA, SmolLM2's heads, 8
    prompts): torch's default backend choice against the engine's (cuDNN excluded), each on
    lengths it has not seen; then a repeat call."""
    import contextlib
    import time

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    from looper_cli.engine.attention import PREFILL_BACKENDS

    def call(length: int) -> float:
        q = torch.randn(8, 9, length, 64, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(8, 3, length, 64, device="cuda", dtype=torch.bfloat16)
        mask = torch.ones(length, length, device="cuda", dtype=torch.bool).tril()[None, None]
        torch.cuda.synchronize()
        started = time.perf_counter()
        F.scaled_dot_product_attention(q, k, k, attn_mask=mask, enable_gqa=True)
        torch.cuda.synchronize()
        return (time.perf_counter() - started) * 1000

    call(64)  # CUDA context, kernels loaded
    for name, backends, base in (("default backends", None, 150), ("engine's (no cuDNN)", PREFILL_BACKENDS, 151)):
        with sdpa_kernel(backends) if backends else contextlib.nullcontext():
            first = [call(base + 20 * i) for i in range(4)]
            again = [call(base + 20 * i) for i in range(4)]
        record("sdpa", f"prefill attention, {name}: first call at a new length", sum(first) / 4, "ms",
               f"8 x {base}..{base + 60} tokens, 9 heads / 3 kv, d 64, bf16, bool mask")
        record("sdpa", f"prefill attention, {name}: same length again", sum(again) / 4, "ms", "")


def section_rollout(args) -> None:
    import torch

    model = build_llama(args.shape, args.device, "bfloat16" if args.device == "cuda" else "float32")
    prompts = random_prompts(args.prompts, args.prompt_len, args.prompt_len, model.config.vocab_size, seed=1)
    bias = calibrate_eos_bias(model, prompts, args.temperature, args.hazard)
    note = (f"{args.shape} random init, EOS bias {bias:.2f} (hazard {args.hazard}), {args.prompts} prompts x "
            f"{args.samples}, {args.prompt_len}-token prompts, T {args.temperature}, cap {args.cap}")
    hook = add_eos_bias(model, bias)
    compare("rollout", model, id_tokenizer(), prompts, args, args.cap, note)
    hook.remove()
    del model
    torch.cuda.empty_cache()


def section_real(args) -> None:
    import torch

    from looper_cli.data import load_problems
    from looper_cli.models import load_model, load_tokenizer
    from looper_cli.prompts import build_prompt

    tok = load_tokenizer(args.model)
    model = load_model(args.model).eval()
    problems = load_problems(str(args.data), split="train", limit=args.questions, seed=0)
    prompts = [tok(build_prompt(tok, p.question, "chat"), add_special_tokens=False).input_ids for p in problems]
    note = (f"{Path(args.model).name}, {len(prompts)} GSM8K train questions x {args.samples}, chat template, "
            f"T {args.temperature}, cap {args.real_cap}")
    compare("real", model, tok, prompts, args, args.real_cap, note)
    del model
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", help="all, or a comma list of check, attention, rollout, real")
    parser.add_argument("--shape", default="8b")
    parser.add_argument("--device", default="cuda", help="rollout: cpu for a smoke run (--shape small)")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--cap", type=int, default=1024)
    parser.add_argument("--hazard", type=float, default=0.01)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-seqs", type=int_list, default=[256])
    parser.add_argument("--gpu-util", type=float, default=0.9)
    parser.add_argument("--static-batch", type=int, default=256)
    parser.add_argument("--skip-static", action="store_true")
    parser.add_argument("--hf-prompts", type=int, default=32)
    parser.add_argument("--attention-rows", type=int, default=256)
    parser.add_argument("--attention-shape", default="8b", choices=sorted(ATTENTION_SHAPES))
    parser.add_argument("--contexts", type=int_list, default=[256, 1024, 4096])
    parser.add_argument("--tiles", type=int_list, default=[None],
                        help="attention: keys per loop iteration of the Triton kernel (default: its own choice)")
    parser.add_argument("--warps", type=int_list, default=[None],
                        help="attention: warps per program of the Triton kernel (default: its own choice)")
    parser.add_argument("--step-shape", default="smol")
    parser.add_argument("--step-rows", type=int_list, default=[64, 512])
    parser.add_argument("--step-lora-r", type=int, default=128)
    parser.add_argument("--step-adapters", type=lambda s: s.lower().split(","), default=["false", "true"],
                        help="step: false (no adapter), true (LoRA), or both (false,true)")
    parser.add_argument("--step-samples", type=int, default=1,
                        help="step: samples a prompt in the timed generation (8: ppo's shared prompt blocks)")
    parser.add_argument("--profile", action="store_true", help="step: list the kernels of one decode step")
    parser.add_argument("--model", help="real: a model path or .gguf")
    parser.add_argument("--data", type=Path, help="real: GSM8K train .jsonl (or its folder)")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--real-cap", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = device_name(args.device)
    sections = {"check": section_check, "step": section_step, "attention": section_attention, "sdpa": section_sdpa,
                "rollout": section_rollout, "real": section_real}
    wanted = set(args.section.split(",")) if args.section != "all" else set(sections) - {"real", "step", "sdpa"}
    for name, run in sections.items():
        if name in wanted:
            run(args)
    finish("looper engine benchmark", device, args.out, "bench_engine.json")


if __name__ == "__main__":
    main()
