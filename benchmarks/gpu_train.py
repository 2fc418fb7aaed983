"""LoRA SFT training throughput of the 8B shape on one GPU (bench_gpu.py train).

Each variant: random-init 8B Llama in bf16, PEFT LoRA r=16 on all linear
layers, AdamW on the adapter, batch 4 (or 2) x 2048 tokens (packed-length rows: what
`packing=True` gives on short GSM8K examples), 2 warm-up + 5 timed steps.
The step is what TRL's SFTTrainer runs (forward with labels, backward,
optimizer step); the Trainer's own bookkeeping is not in the numbers.

FLOPs per token (N = parameters in matmuls, lm_head included, embedding
excluded; s = 2048, d = 4096, L = 32): model FLOPs 4N (forward 2N, input
grads 2N; frozen weights get no weight grads) + 6*s*d*L for causal attention;
recomputed activations add 2N * (checkpointed layers / L) ("hardware FLOPs").
MFU = model FLOPs/s over 989 TFLOP/s (H100/H200 SXM dense bf16).
"""

from __future__ import annotations

import gc
import time

from gpu_models import build_llama, matmul_params

PEAK_FLOPS = 989e12
SEQ, WARMUP, STEPS = 2048, 2, 5

# name: (liger kernels, layers checkpointed: "all" | int,
#        torch.compile of each decoder layer: False | "layer" (whole call) | "forward", batch)
VARIANTS = {
    "hf+ckpt": (False, "all", False, 4),
    "hf": (False, 0, False, 4),
    "liger+ckpt": (True, "all", False, 4),
    "liger": (True, 0, False, 4),
    "liger+ckpt8": (True, 8, False, 4),
    "liger+ckpt4": (True, 4, False, 4),
    "liger+compile": (True, 0, "layer", 4),
    "liger+compile+ckpt8": (True, 8, "layer", 4),  # checkpointing inside the compiled layer saves nothing
    "liger+compile-b2": (True, 0, "layer", 2),
    # forward compiled, checkpoint wrapper left eager: recompute really frees memory
    "liger+fcompile+ckpt6": (True, 6, "forward", 4),
    "liger+fcompile+ckpt8": (True, 8, "forward", 4),
    "liger+fcompile+ckpt10": (True, 10, "forward", 4),
    # Compiled layers that recompute what the partitioner finds cheapest
    # until saved activations fit that fraction of the default.
    "liger+compile-mem0.7": (True, 0, "layer", 4),
    "liger+compile-mem0.5": (True, 0, "layer", 4),
}
ACTIVATION_MEMORY_BUDGET = {"liger+compile-mem0.7": 0.7, "liger+compile-mem0.5": 0.5}


def section_train(args, record) -> None:
    names = list(VARIANTS) if args.train_variants == "all" else [n for n in args.train_variants.split(",") if n]
    # Liger patches transformers' Llama classes globally: plain variants first.
    for name in sorted(names, key=lambda n: VARIANTS[n][0]):
        run_variant(name, *VARIANTS[name], args=args, record=record)


def run_variant(name: str, liger: bool, checkpointed, compiled, batch: int, args, record) -> None:
    import torch
    import torch._functorch.config as functorch_config

    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    functorch_config.activation_memory_budget = ACTIVATION_MEMORY_BUDGET.get(name, 1.0)
    model = optimizer = None
    try:
        model = lora_model(args.shape)
        layers = model.base_model.model.model.layers
        ckpt_layers = len(layers) if checkpointed == "all" else int(checkpointed)
        set_checkpointing(model, layers, ckpt_layers)
        for layer in layers:
            if compiled == "layer":
                layer.compile()
            elif compiled == "forward":
                layer.forward = torch.compile(layer.forward)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        ids = torch.randint(3, model.config.vocab_size, (batch, SEQ), device="cuda")
        for _ in range(WARMUP):
            train_step(model, optimizer, ids)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(STEPS):
            train_step(model, optimizer, ids)
        torch.cuda.synchronize()
        rate = batch * SEQ * STEPS / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30
        model_flops, hw_flops = flops_per_token(model, ckpt_layers / len(layers))
        note = f"LoRA r16 all-linear, {batch}x{SEQ}, ckpt {ckpt_layers}/{len(layers)} layers, peak {peak:.1f} GiB"
        record("train", f"SFT {name}", rate, "tok/s", note)
        record("train", f"SFT {name} MFU (HFU)", rate * model_flops / PEAK_FLOPS * 100, "%",
               f"model {model_flops / 1e9:.1f} GFLOP/tok, HFU {rate * hw_flops / PEAK_FLOPS * 100:.1f}%")
    except torch.cuda.OutOfMemoryError:
        record("train", f"SFT {name}", 0, "tok/s", "out of memory")
    except Exception as error:  # a variant that breaks must not hide the others' figures
        record("train", f"SFT {name}", 0, "tok/s", f"failed: {type(error).__name__}: {str(error)[:120]}")
    finally:
        del model, optimizer
        gc.collect()
        torch.cuda.empty_cache()


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


def train_step(model, optimizer, ids) -> None:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flops_per_token(model, recomputed_fraction: float) -> tuple[float, float]:
    cfg = model.config
    n = matmul_params(model.base_model.model)
    attention = 6 * SEQ * cfg.hidden_size * cfg.num_hidden_layers
    model_flops = 4 * n + attention
    return model_flops, model_flops + recomputed_fraction * (2 * n + attention / 3)
