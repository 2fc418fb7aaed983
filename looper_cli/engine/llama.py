"""The Llama-family model as the engine runs it: the model's own embeddings,
RMSNorms, activation and lm_head, and its projection weights (weights.py:
the parameters in place, or a LoRA adapter's merged copy refreshed at every
call); only attention and the KV cache are the engine's.

The pieces between cache accesses are free functions, so one
torch.compile of each serves every layer and every runner.
"""

from __future__ import annotations

from typing import Any

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


def model_type(model: Any) -> str:
    lm = base_causal_lm(model)
    return getattr(getattr(lm, "config", None), "model_type", None) or type(lm).__name__


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def pre_attention(norm: Any, x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
                  cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int, head_dim: int):
    """Norm, q/k/v projections and rope: x [tokens, hidden] ->
    q [tokens, heads, d], k, v [tokens, kv_heads, d]; cos/sin [tokens, 1, d]."""
    tokens, h = x.shape[0], norm(x)
    q = F.linear(h, wq).view(tokens, heads, head_dim)
    k = F.linear(h, wk).view(tokens, kv_heads, head_dim)
    v = F.linear(h, wv).view(tokens, kv_heads, head_dim)
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def finish_layer(norm: Any, act: Any, x: torch.Tensor, attn: torch.Tensor, wo: torch.Tensor,
                 w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """o_proj, residual, the gated MLP, residual; attn is [tokens, heads, d]."""
    x = x + F.linear(attn.reshape(x.shape[0], -1), wo)
    h = norm(x)
    return x + F.linear(act(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)


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
