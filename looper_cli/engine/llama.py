"""The Llama-family model as the engine runs it: the model's own embeddings,
RMSNorms, activation and lm_head, and its projection weights (weights.py:
the parameters in place, or a LoRA adapter's merged copy refreshed at every
call); only attention and the KV cache are the engine's.

The pieces between cache accesses are free functions, so one
torch.compile of each serves every layer and every runner.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = {"llama"}


def base_causal_lm(model: Any) -> Any:
    """The `...ForCausalLM` under a PEFT wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_llama_family(model: Any) -> bool:
    lm = base_causal_lm(model)
    cfg = getattr(lm, "config", None)
    inner = getattr(lm, "model", None)
    return (
        getattr(cfg, "model_type", None) in SUPPORTED_MODEL_TYPES
        and getattr(cfg, "sliding_window", None) is None
        and not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False)
        and hasattr(inner, "layers") and hasattr(inner, "rotary_emb") and hasattr(lm, "lm_head")
    )


def fast_engine_refusal(model: Any) -> Optional[str]:
    """Why the fast engine cannot run `model`, in one line (None: it can)."""
    if not is_llama_family(model):
        return f"--engine fast runs Llama-family models only, not {model_type(model)!r}; use --engine auto or hf"
    cfg = base_causal_lm(model).config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim & (head_dim - 1):  # the attention kernel's vectors are powers of two long
        return f"--engine fast needs a power-of-two head dimension, not {head_dim}; use --engine auto or hf"
    return None


def model_type(model: Any) -> str:
    lm = base_causal_lm(model)
    return getattr(getattr(lm, "config", None), "model_type", None) or type(lm).__name__


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def project(h: torch.Tensor, weights: tuple[torch.Tensor, ...], sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """The outputs of projections that share their input: one matmul and a
    split for a fused weight (weights.py), else one matmul each."""
    if len(weights) == 1:
        return F.linear(h, weights[0]).split(list(sizes), dim=-1)
    return tuple(F.linear(h, w) for w in weights)


def pre_attention(norm: Any, x: torch.Tensor, w_qkv: tuple[torch.Tensor, ...], cos: Optional[torch.Tensor],
                  sin: Optional[torch.Tensor], heads: int, kv_heads: int, head_dim: int):
    """Norm, q/k/v projections and rope: x [tokens, hidden] ->
    q [tokens, heads, d], k, v [tokens, kv_heads, d]; cos/sin [tokens, 1, d],
    or None to leave q and k unrotated (decode: the attention kernel rotates)."""
    tokens = x.shape[0]
    q, k, v = project(norm(x), w_qkv, (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim))
    q, k = q.reshape(tokens, heads, head_dim), k.reshape(tokens, kv_heads, head_dim)
    if cos is not None:
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    return q, k, v.reshape(tokens, kv_heads, head_dim)


def finish_layer(norm: Any, act: Any, x: torch.Tensor, attn: torch.Tensor, wo: torch.Tensor,
                 w_gate_up: tuple[torch.Tensor, ...], w_down: torch.Tensor) -> torch.Tensor:
    """o_proj, residual, the gated MLP, residual; attn is [tokens, heads, d]."""
    x = x + residual_branch(attn.reshape(x.shape[0], -1), wo)
    h = norm(x)
    gate, up = project(h, w_gate_up, (w_down.shape[1], w_down.shape[1]))
    return x + residual_branch(act(gate) * up, w_down)


def residual_branch(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(h, weight) [tokens, out], through a 3-d view. Why: inductor
    rewrites `x + mm(h, w)` as cuBLAS addmm, which first copies x into its
    output (two copy kernels a layer) and rounds once where transformers
    rounds the product and then the sum. Behind the view the add stays a
    pointwise op, which joins the next RMSNorm's kernel."""
    return F.linear(h[None], weight)[0]


def between_layers(finish: tuple[Any, ...], norm: Any, w_qkv: tuple[torch.Tensor, ...], cos: Optional[torch.Tensor],
                   sin: Optional[torch.Tensor], heads: int, kv_heads: int, head_dim: int):
    """Layer n after its attention, then layer n + 1 up to its attention, in
    one piece: compiled together, the residual add and the next norm are one
    kernel. `finish` is finish_layer's arguments. Returns x, q, k, v."""
    x = finish_layer(*finish)
    return (x,) + pre_attention(norm, x, w_qkv, cos, sin, heads, kv_heads, head_dim)


def last_layer(finish: tuple[Any, ...], final_norm: Any) -> torch.Tensor:
    """The last layer after its attention, and the model's final norm."""
    return final_norm(finish_layer(*finish))


_COMPILED: dict[Any, Any] = {}


def compiled(fn):
    """The process-wide torch.compile of `fn` (compiled code is reused
    by every runner and layer)."""
    if fn not in _COMPILED:
        # Each graph bucket's batch size costs a guard miss before dynamo
        # goes dynamic; past the limit it would silently fall back to eager.
        config = torch._dynamo.config
        if hasattr(config, "recompile_limit"):
            config.recompile_limit = max(config.recompile_limit, 64)
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]
