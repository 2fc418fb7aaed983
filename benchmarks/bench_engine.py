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
from gpu_models import EOS, SHAPES, build_llama, id_tokenizer  # noqa: E402

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
        fused = FastGenerator(lora, tok, EngineConfig(max_seqs=8, fused_linear=True))
        got = [g[0].token_ids for g in fused.generate_ids(prompts, greedy)]
        record("check", f"greedy == transformers (LoRA r=8, fused decode projections{when})",
               100 * sum(a == b for a, b in zip(got, want)) / len(want), "% seqs", "small fp32, fused_linear=True")
        del fused
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
        for rows, fused in [(r, f) for r in args.step_rows for f in args.step_fused]:
            choice = {} if fused is None else {"fused_linear": fused}  # none: an engine from before the option
            engine = FastGenerator(model, id_tokenizer(), EngineConfig(max_seqs=rows, **choice))
            engine.warm_up(128 + 256)
            runner = engine.runner
            label = ", fused" if getattr(runner, "fused", False) else ""
            with torch.inference_mode():
                runner._fill_inputs([], rows)
                replay = triton.testing.do_bench(lambda: runner._run_step(rows, False), return_mode="median")
                if args.profile:
                    print_kernels(lambda: runner._run_step(rows, False), f"{rows} rows, lora {lora}, fused {fused}")
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
                                     f"{rows} rows, lora {lora}, fused {fused}, a whole generation, per decode step",
                                     repeats=steps,
                                     calls=1)
                record("step", f"{rows} rows{label}: GPU busy per decode step (whole generation)", busy / 1000, "ms",
                       f"kernel time of the generation (prefill included) / {steps} decode steps")
            note = (f"{args.step_shape} random init, {'LoRA r=%d' % args.step_lora_r if lora else 'no adapter'}, "
                    f"fused projections {'auto' if fused is None else fused} ({bool(label)})")
            record("step", f"{rows} rows{label}: graph replay", replay, "ms", note)
            record("step", f"{rows} rows{label}: wall per decode step", wall, "ms",
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
        for tile, warps, stages in [(t, w, s) for t in args.tiles for w in args.warps for s in args.stages]:
            def attend():
                return paged_decode_triton(q, k, v, tables, lens, dim ** -0.5, (k_new, v_new, slots), tile=tile,
                                           rope=rope, warps=warps, stages=stages)

            error = (attend().float() - want).abs().max().item()
            ms = in_graph_ms(attend, calls)
            record("attention", f"triton paged kernel, tile {tile or 'default'}, {warps or 'default'} warps, "
                   f"{stages} stages, context {context}",
                   ms * 1000, "us", f"{note}; {kv_bytes / ms / 1e9:.2f} TB/s of KV read; max |diff| "
                   f"{error:.1e}; decode mode, in a CUDA graph")
        del q, k, v
        torch.cuda.empty_cache()


LINEAR_KINDS = ("qkv", "o", "gate_up", "down", "head")


def section_linear(args) -> None:
    """The fused projections of a decode step (fused_linear.py) by tile sizes, against what the
    unfused path runs (the same ops compiled: inductor's norm / activation / add kernels around a
    cuBLAS matmul), each in a CUDA graph cycling over a model's worth of layer weights (so the
    weights come from HBM, as in a decode step, not from L2). Prints the best tiles per kind."""
    import torch
    import torch.nn.functional as F

    from looper_cli.engine import fused_linear as fl
    from looper_cli.engine.llama import compiled

    eps = 1e-5

    def unfused(kind):
        def qkv(x, g, w):
            return F.linear(fl.reference_norm(x, g, eps), w)

        def gate_up(x, g, w):
            gate, up = F.linear(fl.reference_norm(x, g, eps), w).chunk(2, dim=-1)
            return F.silu(gate) * up

        def residual(h, w, r):
            return r + F.linear(h[None], w)[0]

        return compiled({"qkv": qkv, "head": qkv, "gate_up": gate_up, "o": residual, "down": residual}[kind])

    for shape in args.linear_shapes:
        cfg = SHAPES[shape]
        hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        dim = hidden // cfg["num_attention_heads"]
        kv = cfg["num_key_value_heads"] * dim
        layers = min(cfg["num_hidden_layers"], 8 if hidden > 2048 else 30)
        outs = {"qkv": (hidden, hidden + 2 * kv), "o": (hidden, hidden), "gate_up": (hidden, 2 * inter),
                "down": (inter, hidden), "head": (hidden, vocab)}
        for rows in args.linear_rows:
            for kind in LINEAR_KINDS:
                inner, width = outs[kind]
                count = 1 if kind == "head" else layers
                weights = [torch.randn(width, inner, device="cuda", dtype=torch.bfloat16) / inner ** 0.5
                           for _ in range(count)]
                x = torch.randn(rows, inner, device="cuda", dtype=torch.bfloat16)
                g = torch.rand(inner, device="cuda", dtype=torch.bfloat16) + 0.5
                r = torch.randn(rows, width, device="cuda", dtype=torch.bfloat16)
                parts = [(w[:hidden], w[hidden:hidden + kv], w[hidden + kv:]) if kind == "qkv" else (w,)
                         for w in weights]
                base = unfused(kind)
                base_args = [(x, g, w) if kind in ("qkv", "head", "gate_up") else (x, w, r) for w in weights]

                def fused(w, p, tiles):
                    if kind in ("qkv", "head"):
                        return fl.norm_linear(x, g, eps, p, tiles)
                    if kind == "gate_up":
                        return fl.norm_gate_up(x, g, eps, *w.chunk(2), tiles)
                    return fl.linear_residual(x, w, r, tiles)

                cycle = [0]

                def run_base():
                    i = cycle[0] = (cycle[0] + 1) % count
                    return base(*base_args[i])

                want = base(*base_args[0]).float()
                baseline = in_graph_ms(run_base, 30) * 1000
                note = f"{shape}, {rows} rows, [{inner} -> {width}], {count} weight sets"
                record("linear", f"{shape} {rows} rows {kind}: unfused (inductor + cuBLAS)", baseline, "us", note)
                results = []
                columns = [16, 32, 64] if hidden <= 2048 else [32, 64, 128]
                for tiles in [fl.Tiles(n, k) for n in columns for k in (64, 128, 256)]:
                    if not fl.tile_fits(parts[0], tiles) or (kind == "gate_up" and (width // 2) % tiles.n):
                        continue
                    error = (fused(weights[0], parts[0], tiles).float() - want).abs().max().item()

                    def run_fused():
                        i = cycle[0] = (cycle[0] + 1) % count
                        return fused(weights[i], parts[i], tiles)

                    results.append((in_graph_ms(run_fused, 30) * 1000, tiles, error))
                best = min(results, key=lambda t: t[0])
                for stages, warps in ((2, 4), (4, 4), (3, 2), (3, 8)):
                    tiles = fl.Tiles(best[1].n, best[1].k, warps, stages)

                    def run_fused():
                        i = cycle[0] = (cycle[0] + 1) % count
                        return fused(weights[i], parts[i], tiles)

                    results.append((in_graph_ms(run_fused, 30) * 1000, tiles, best[2]))
                for us, tiles, error in sorted(results, key=lambda t: t[0])[:4]:
                    record("linear", f"{shape} {rows} rows {kind}: fused {tiles}", us, "us",
                           f"{note}; max |diff| {error:.1e}; x{baseline / us:.2f} vs unfused")
                print(f"{shape} {rows} rows {kind}: unfused {baseline:.2f} us, default "
                      f"{fl.default_tiles(rows, inner, width)}, best {sorted(results, key=lambda t: t[0])[0]}",
                      flush=True)
                del weights, parts, base_args
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


def section_agree(args) -> None:
    """bf16 greedy of a real model (--model, GSM8K --data questions, chat template): how often the
    engine's completion equals transformers' token for token, with decode's projections fused
    and unfused. In bf16 batched matmuls round differently from one batch shape to another, so
    neither path is 100%; the fused one should agree as often as the unfused one."""
    import torch

    from looper_cli.data import load_problems
    from looper_cli.engine import EngineConfig, SamplingConfig
    from looper_cli.engine.generator import FastGenerator
    from looper_cli.engine.hf import HFGenerator
    from looper_cli.models import load_model, load_tokenizer
    from looper_cli.prompts import build_prompt

    tok = load_tokenizer(args.model)
    model = load_model(args.model).to(torch.bfloat16).eval()
    problems = load_problems(str(args.data), split="train", limit=64, seed=1)
    prompts = [tok(build_prompt(tok, p.question, "chat"), add_special_tokens=False).input_ids for p in problems]
    greedy = SamplingConfig(max_new_tokens=128, temperature=0)
    want = [g[0].token_ids for g in HFGenerator(model, tok, EngineConfig(max_seqs=64)).generate_ids(prompts, greedy)]
    runs = {}
    for fused in (False, True):
        engine = FastGenerator(model, tok, EngineConfig(max_seqs=64, fused_linear=fused))
        runs[fused] = [g[0].token_ids for g in engine.generate_ids(prompts, greedy)]
        same = sum(a == b for a, b in zip(runs[fused], want))
        prefix = sum(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                     for a, b in zip(runs[fused], want)) / len(want)
        record("agree", f"bf16 greedy == transformers ({'fused' if fused else 'unfused'} projections)",
               100 * same / len(want), "% seqs", f"{Path(args.model).name}, 64 GSM8K questions, 128 new; "
               f"mean common prefix {prefix:.1f} tokens")
        del engine
    record("agree", "fused == unfused", 100 * sum(a == b for a, b in zip(runs[True], runs[False])) / len(want),
           "% seqs", "bf16 greedy, same prompts")
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
    parser.add_argument("--stages", type=int_list, default=[2], help="attention: pipeline stages of the kernel")
    parser.add_argument("--step-shape", default="smol")
    parser.add_argument("--step-rows", type=int_list, default=[64, 512])
    parser.add_argument("--step-lora-r", type=int, default=128)
    parser.add_argument("--step-adapters", type=lambda s: s.lower().split(","), default=["false", "true"],
                        help="step: false (no adapter), true (LoRA), or both (false,true)")
    parser.add_argument("--step-samples", type=int, default=1,
                        help="step: samples a prompt in the timed generation (8: ppo's shared prompt blocks)")
    parser.add_argument("--step-fused", type=lambda s: [None if v == "auto" else v == "true" for v in s.split(",")],
                        default=[None], help="step: decode projections fused: auto, true, false, or a comma list")
    parser.add_argument("--profile", action="store_true", help="step: list the kernels of one decode step")
    parser.add_argument("--linear-shapes", type=lambda s: s.split(","), default=["smol", "8b"])
    parser.add_argument("--linear-rows", type=int_list, default=[64, 256])
    parser.add_argument("--model", help="real: a model path or .gguf")
    parser.add_argument("--data", type=Path, help="real: GSM8K train .jsonl (or its folder)")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--real-cap", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = device_name(args.device)
    sections = {"check": section_check, "step": section_step, "attention": section_attention, "sdpa": section_sdpa,
                "rollout": section_rollout, "real": section_real, "linear": section_linear, "agree": section_agree}
    wanted = set(args.section.split(",")) if args.section != "all" else set(sections) - {"real", "step", "sdpa", "linear", "agree"}
    for name, run in sections.items():
        if name in wanted:
            run(args)
    finish("looper engine benchmark", device, args.out, "bench_engine.json")


if __name__ == "__main__":
    main()
