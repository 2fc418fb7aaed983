"""LoRA SFT training throughput of the 8B shape on one GPU (bench_gpu.py train).

Each variant: random-init 8B Llama in bf16, PEFT LoRA r=16 on all linear
layers (adapter weights in float32, as PEFT keeps them), AdamW on the adapter,
batch 4 (or -bN) x 2048 tokens (packed-length rows: what `packing=True` gives on
short GSM8K examples), 2 warm-up + 5 timed steps; -amp runs the forward under
bf16 autocast as Trainer does with bf16=True. `looper sft --compile` is the
flce+compile-memF-amp recipe (TRL fuses the LM head itself).
DPO variants time the DPO step on the same rows (half chosen, half rejected).
The step is what TRL's SFTTrainer runs (forward with labels, backward,
optimizer step); the Trainer's own bookkeeping is not in the numbers.

FLOPs per token (N = parameters in matmuls, lm_head included, embedding
excluded; s = 2048, d = 4096, L = 32): model FLOPs 4N (forward 2N, input
grads 2N; frozen weights get no weight grads) + 6*s*d*L for causal attention;
recomputed activations add 2N * (checkpointed layers / L) ("hardware FLOPs").
MFU = model FLOPs/s over 989 TFLOP/s (H100/H200 SXM dense bf16).
"""

from __future__ import annotations

import functools
import gc
import re
import time
from dataclasses import dataclass
from typing import Any

from gpu_models import build_llama, matmul_params

PEAK_FLOPS = 989e12
SEQ, WARMUP, STEPS = 2048, 2, 5

# base name: (Liger kernels: None | "all" (rope, RMSNorm, SwiGLU, fused linear CE) | "flce" (the
#             fused linear cross-entropy only), layers checkpointed: "all" | int,
#             torch.compile of each decoder layer: False | "layer" (whole call) | "forward")
BASES = {
    "hf+ckpt": (None, "all", False),
    "hf": (None, 0, False),
    "liger+ckpt": ("all", "all", False),
    "liger": ("all", 0, False),
    "liger+ckpt8": ("all", 8, False),
    "liger+ckpt4": ("all", 4, False),
    "liger+compile": ("all", 0, "layer"),
    "liger+compile+ckpt8": ("all", 8, "layer"),  # checkpointing inside the compiled layer saves nothing
    # forward compiled, checkpoint wrapper left eager: recompute really frees memory
    "liger+fcompile+ckpt6": ("all", 6, "forward"),
    "liger+fcompile+ckpt8": ("all", 8, "forward"),
    "liger+fcompile+ckpt10": ("all", 10, "forward"),
    # inductor fuses RMSNorm, rope and SwiGLU itself and can recompute them in backward;
    # Liger's Triton kernels are opaque to it (treated as mutating every input)
    "flce+compile": ("flce", 0, "layer"),
}
# A variant is "[dpo:]BASE[-memF][-bN]":
#   dpo:  a DPO step (policy on chosen + rejected, frozen reference = adapter off) instead of SFT
#   memF: compiled layers recompute what the partitioner finds cheapest until the saved
#         activations fit F of the default (torch._functorch activation_memory_budget)
#   bN:   N rows of 2048 tokens per step (DPO: N/2 pairs); default 4
#   amp:  forward under torch.autocast(bfloat16), as Trainer runs it with bf16=True: PEFT keeps
#         LoRA weights in float32, and without autocast their matmuls run in float32
VARIANT = re.compile(r"^(?P<dpo>dpo:)?(?P<base>[a-z0-9+]+?)(-mem(?P<mem>[0-9.]+))?(-b(?P<batch>[0-9]+))?"
                     r"(?P<amp>-amp)?$")
# Trainer's bf16=True runs the forward under autocast, so the -amp rows are the ones to compare
DEFAULT_VARIANTS = ["hf+ckpt-amp", "flce+compile-mem0.8-amp", "dpo:hf+ckpt-amp", "dpo:flce+compile-mem0.8-amp"]


@dataclass
class Variant:
    name: str
    dpo: bool
    liger: Any
    checkpointed: Any
    compiled: Any
    memory_budget: float
    batch: int
    amp: bool = False


def parse_variant(name: str) -> Variant:
    match = VARIANT.match(name)
    if not match or match["base"] not in BASES:
        raise SystemExit(f"unknown training variant {name!r}: [dpo:]BASE[-memF][-bN], BASE in {sorted(BASES)}")
    liger, checkpointed, compiled = BASES[match["base"]]
    return Variant(name, bool(match["dpo"]), liger, checkpointed, compiled,
                   float(match["mem"] or 1.0), int(match["batch"] or 4), bool(match["amp"]))


def section_train(args, record) -> None:
    names = DEFAULT_VARIANTS if args.train_variants == "all" else [n for n in args.train_variants.split(",") if n]
    variants = [parse_variant(n) for n in names]
    # Liger patches transformers' Llama classes globally: plain variants first.
    # The memory budget is read when a layer compiles: give each budget its own process.
    for variant in sorted(variants, key=lambda v: v.liger is not None):
        run_variant(variant, args=args, record=record)


def run_variant(v: Variant, args, record) -> None:
    import torch
    import torch._functorch.config as functorch_config

    if v.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        every = v.liger == "all"
        apply_liger_kernel_to_llama(rope=every, rms_norm=every, swiglu=every, fused_linear_cross_entropy=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    functorch_config.activation_memory_budget = v.memory_budget
    model = optimizer = None
    try:
        model = lora_model(args.shape)
        layers = model.base_model.model.model.layers
        ckpt_layers = len(layers) if v.checkpointed == "all" else int(v.checkpointed)
        set_checkpointing(model, layers, ckpt_layers)
        for layer in layers:
            if v.compiled == "layer":
                layer.compile()
            elif v.compiled == "forward":
                layer.forward = torch.compile(layer.forward)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        ids = torch.randint(3, model.config.vocab_size, (v.batch, SEQ), device="cuda")
        step = functools.partial(dpo_step if v.dpo else train_step, amp=v.amp)
        for _ in range(WARMUP):
            step(model, optimizer, ids)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(STEPS):
            step(model, optimizer, ids)
        torch.cuda.synchronize()
        rate = v.batch * SEQ * STEPS / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30
        model_flops, hw_flops = flops_per_token(model, ckpt_layers / len(layers), v.dpo)
        stage = "DPO" if v.dpo else "SFT"
        note = (f"LoRA r16 all-linear, {v.batch}x{SEQ}{' (chosen+rejected)' if v.dpo else ''}, "
                f"{'autocast bf16, ' if v.amp else ''}"
                f"ckpt {ckpt_layers}/{len(layers)} layers, memory budget {v.memory_budget}, peak {peak:.1f} GiB")
        record("train", f"{stage} {v.name}", rate, "tok/s", note)
        record("train", f"{stage} {v.name} MFU (HFU)", rate * model_flops / PEAK_FLOPS * 100, "%",
               f"model {model_flops / 1e9:.1f} GFLOP/tok, HFU {rate * hw_flops / PEAK_FLOPS * 100:.1f}%")
        if getattr(args, "train_profile", False):
            profile_step(lambda: step(model, optimizer, ids), f"{stage} {v.name}", record)
    except torch.cuda.OutOfMemoryError:
        record("train", f"{v.name}", 0, "tok/s", "out of memory")
    except Exception as error:  # a variant that breaks must not hide the others' figures
        record("train", f"{v.name}", 0, "tok/s", f"failed: {type(error).__name__}: {str(error)[:120]}")
    finally:
        del model, optimizer
        gc.collect()
        torch.cuda.empty_cache()


# GPU time per kernel family, from kernel names (cuBLAS/CUTLASS GEMMs, flash attention,
# inductor's generated Triton, Liger's Triton, the rest)
KERNEL_FAMILIES = [("gemm", ("gemm", "xmma", "cutlass", "nvjet", "cublas")), ("attention", ("flash", "fmha")),
                   ("inductor", ("triton_poi", "triton_red", "triton_per", "triton_tem")),
                   ("liger", ("_rms_norm_", "_swiglu_", "_triton_rope", "liger", "element_mul_kernel"))]


def kernel_family(name: str) -> str:
    lowered = name.lower()
    for family, marks in KERNEL_FAMILIES:
        if any(mark in lowered for mark in marks):
            return family
    return "other"


def profile_step(run_step, label: str, record) -> None:
    """One step under the profiler: GPU time by kernel family and the top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in kernels)
    families: dict[str, float] = {}
    for e in kernels:
        families[kernel_family(e.key)] = families.get(kernel_family(e.key), 0) + e.self_device_time_total
    for family, micros in sorted(families.items(), key=lambda kv: -kv[1]):
        record("profile", f"{label} {family}", micros / 1e3, "ms", f"{100 * micros / total:.1f}% of GPU time")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]:
        record("profile", f"{label} kernel", e.self_device_time_total / 1e3, "ms",
               f"x{e.count} {kernel_family(e.key)} {e.key[:90]}")


def lora_model(shape: str):
    from peft import LoraConfig, get_peft_model

    model = build_llama(shape, "cuda")
    model.config.use_cache = False
    model.train()
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                            target_modules="all-linear", task_type="CAUSAL_LM"))


def set_checkpointing(model, layers, count: int) -> None:
    """Recompute activations of the first `count` decoder layers only
    (selective checkpointing): memory for speed, a layer at a time."""
    if count == 0:
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < count


def train_step(model, optimizer, ids, amp: bool = False) -> None:
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def dpo_step(model, optimizer, ids, amp: bool = False, beta: float = 0.1) -> None:
    """What TRL's DPOTrainer runs for a LoRA policy with no ref_model: the
    reference is the same weights with the adapter switched off (no grad),
    the policy sees chosen and rejected rows in one batch."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        with torch.no_grad(), model.disable_adapter():
            reference = sequence_logps(model, ids)
        policy = sequence_logps(model, ids)
    pairs = ids.shape[0] // 2
    margin = (policy[:pairs] - reference[:pairs]) - (policy[pairs:] - reference[pairs:])
    loss = -F.logsigmoid(beta * margin).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sequence_logps(model, ids, chunk: int = 512):
    """Sum of next-token log-probs per row, the vocabulary projection taken a
    chunk of positions at a time so float32 logits never hold the whole batch."""
    import torch

    causal_lm = model.base_model.model
    hidden = causal_lm.model(input_ids=ids).last_hidden_state[:, :-1]
    targets = ids[:, 1:]
    total = torch.zeros(ids.shape[0], device=ids.device, dtype=torch.float32)
    for begin in range(0, hidden.shape[1], chunk):
        logits = causal_lm.lm_head(hidden[:, begin:begin + chunk]).float()
        picked = logits.gather(-1, targets[:, begin:begin + chunk, None]).squeeze(-1)
        total = total + (picked - logits.logsumexp(-1)).sum(-1)
    return total


def flops_per_token(model, recomputed_fraction: float, dpo: bool = False) -> tuple[float, float]:
    """Model FLOPs per policy token: SFT 4N + attention; DPO adds the
    reference forward (2N + a third of the attention term)."""
    cfg = model.config
    n = matmul_params(model.base_model.model)
    attention = 6 * SEQ * cfg.hidden_size * cfg.num_hidden_layers
    model_flops = 4 * n + attention + (2 * n + attention / 3 if dpo else 0)
    return model_flops, model_flops + recomputed_fraction * (2 * n + attention / 3)
