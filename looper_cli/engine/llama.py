"""A direct Llama-family forward over a static KV cache.

It calls the model's own modules (embeddings, RMSNorms, q/k/v/o projections,
MLP, lm_head), so weights are read in place and PEFT LoRA layers still apply;
only attention and the cache are ours. Layout is left-padded: all sequences
of a batch write the same cache slot at each step, so one captured graph
serves every step of a batch (the write index is a device tensor).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from looper_cli.errors import UserError

SUPPORTED_MODEL_TYPES = {"llama"}
SLOT_ALIGN = 64  # cache length multiple; graphs.BUCKET is a multiple of it
PREFILL_SCORE_BYTES = 1 << 30  # cap on one prefill chunk's float32 attention scores


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
        and hasattr(inner, "layers") and hasattr(inner, "rotary_emb") and hasattr(lm, "lm_head")
    )


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LlamaRunner:
    def __init__(self, model: Any, compile_layers: bool = False):
        lm = base_causal_lm(model)
        cfg = lm.config
        self.embed, self.layers = lm.model.embed_tokens, list(lm.model.layers)
        self.norm, self.head, self.rotary = lm.model.norm, lm.lm_head, lm.model.rotary_emb
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.device, self.dtype = self.embed.weight.device, self.embed.weight.dtype
        self.cache_k: torch.Tensor | None = None
        self.cache_v: torch.Tensor | None = None
        # Decode is ~40 small elementwise kernels per layer around the
        # matmuls (norms, rope, mask, softmax, SiLU, residuals); compiling
        # the pieces between cache writes fuses them. One compile serves
        # all layers (modules are inputs), shapes are marked dynamic after
        # the first, so a run compiles each piece about twice.
        pieces = (pre_attention, attention, finish_layer)
        self._pre, self._attend, self._post = (compiled(f) for f in pieces) if compile_layers else pieces

    # -- cache -----------------------------------------------------------
    def ensure_cache(self, batch: int, length: int) -> bool:
        """Make room for `batch` sequences of `length` tokens; True when the
        cache was (re)allocated, so graphs captured on the old one are stale."""
        if self.cache_k is not None and self.cache_k.shape[1] >= batch and self.cache_k.shape[3] >= length:
            return False
        self.cache_k = self.cache_v = None  # free first: the old cache may be most of the memory
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        length = -(-length // SLOT_ALIGN) * SLOT_ALIGN  # attention spans stay aligned for SDPA kernels
        shape = (len(self.layers), batch, self.kv_heads, length, self.head_dim)
        # Zeros, not empty: masked slots still meet the matmuls, and a NaN
        # left in fresh memory would survive the mask (NaN * 0 = NaN).
        try:
            self.cache_k = torch.zeros(shape, device=self.device, dtype=self.dtype)
            self.cache_v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        except torch.OutOfMemoryError:
            self.cache_k = self.cache_v = None
            size = 2 * torch.Size(shape).numel() * torch.tensor([], dtype=self.dtype).element_size() / 2**30
            raise UserError(f"the KV cache for {batch} sequences x {length} tokens needs {size:.1f} GiB "
                            "more than the device has free; lower --batch-size or --max-new-tokens") from None
        # cos/sin for every position once, from the model's own rotary module
        # (llama3 / linear rope scaling included); steps just index the table.
        positions = torch.arange(length, device=self.device)[None]
        cos, sin = self.rotary(self.cache_k[0, :1, 0], positions)
        self.cos, self.sin = cos[0], sin[0]
        return True

    @property
    def capacity(self) -> int:
        return 0 if self.cache_k is None else self.cache_k.shape[3]

    def prefill(self, ids: torch.Tensor, starts: torch.Tensor, samples: int) -> torch.Tensor:
        """Run left-padded prompts `ids` [b, P] once; write their KV into cache
        rows [0, b*samples) (each prompt's KV copied to its `samples` rows) and
        return the last position's logits [b, vocab] in float32. Long prompts
        go a few at a time: attention scores are b x heads x P x P."""
        length = ids.shape[1]
        chunk = max(1, PREFILL_SCORE_BYTES // (self.heads * length * length * 4))
        return torch.cat([self._prefill_rows(ids[i:i + chunk], starts[i:i + chunk], samples, i * samples)
                          for i in range(0, ids.shape[0], chunk)])

    def _prefill_rows(self, ids: torch.Tensor, starts: torch.Tensor, samples: int, row: int) -> torch.Tensor:
        b, length = ids.shape
        rows = slice(row, row + b * samples)
        j = torch.arange(length, device=ids.device)
        positions = (j[None] - starts[:, None]).clamp(min=0)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        causal = j[None, :] <= j[:, None]
        real_key = j[None, None, :] >= starts[:, None, None]
        # Pad rows attend to themselves only, so no softmax row is empty (NaN).
        mask = ((causal[None] & real_key) | torch.eye(length, dtype=torch.bool, device=ids.device))[:, None]
        x = self.embed(ids)
        for n, layer in enumerate(self.layers):
            q, k, v = pre_attention(layer, x, cos, sin, self.heads, self.kv_heads, self.head_dim)
            self.cache_k[n, rows, :, :length] = k.repeat_interleave(samples, dim=0)
            self.cache_v[n, rows, :, :length] = v.repeat_interleave(samples, dim=0)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True)
            x = finish_layer(layer, x, attn)
        return self.head(self.norm(x[:, -1])).float()

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, starts: torch.Tensor,
               write_at: torch.Tensor, attend: int) -> torch.Tensor:
        """One step for B sequences: feed `tokens` [B] at cache slot `write_at`
        (0-d tensor), attend over slots [0, attend), return logits [B, vocab].
        Shapes depend only on (B, attend): capturable as one CUDA graph."""
        batch = tokens.shape[0]
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
        slots = torch.arange(attend, device=tokens.device)
        visible = ((slots[None] >= starts[:, None]) & (slots[None] <= write_at))[:, None, None]  # [B,1,1,T]
        x = self.embed(tokens)[:, None]
        for n, layer in enumerate(self.layers):
            q, k, v = self._pre(layer, x, cos, sin, self.heads, self.kv_heads, self.head_dim)
            keys, values = self.cache_k[n, :batch], self.cache_v[n, :batch]
            keys.index_copy_(2, write_at.view(1), k)
            values.index_copy_(2, write_at.view(1), v)
            attn = self._attend(q, keys[:, :, :attend], values[:, :, :attend], visible, self.kv_heads, self.scale)
            x = self._post(layer, x, attn)
        return self.head(self.norm(x[:, 0])).float()


# -- layer pieces: free functions, so one torch.compile serves every runner --
def pre_attention(layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  heads: int, kv_heads: int, head_dim: int):
    """Norm, q/k/v projections and rope: [b, t, H] -> q [b, heads, t, d], k, v [b, kv, t, d]."""
    b, t, _ = x.shape
    att, h = layer.self_attn, layer.input_layernorm(x)
    q = att.q_proj(h).view(b, t, heads, head_dim).transpose(1, 2)
    k = att.k_proj(h).view(b, t, kv_heads, head_dim).transpose(1, 2)
    v = att.v_proj(h).view(b, t, kv_heads, head_dim).transpose(1, 2)
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor,
              kv_heads: int, scale: float) -> torch.Tensor:
    """One query per row: q [B, heads, 1, d] over keys/values [B, kv, T, d].
    GQA without copying the cache: the query heads of one KV head become
    that head's query rows, so one fused SDPA kernel (memory-efficient,
    it takes the mask) reads each cache slot once."""
    batch, heads, _, head_dim = q.shape
    qg = q.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=visible, scale=scale)
    return out.reshape(batch, heads, 1, head_dim)


def finish_layer(layer: Any, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """o_proj, residual, MLP, residual; attn is [b, heads, t, d]."""
    b, t = x.shape[:2]
    x = x + layer.self_attn.o_proj(attn.transpose(1, 2).reshape(b, t, -1))
    return x + layer.mlp(layer.post_attention_layernorm(x))


_COMPILED: dict[Any, Any] = {}


def compiled(fn):
    """The process-wide torch.compile of `fn` (compiled code is reused
    by every runner and layer)."""
    if fn not in _COMPILED:
        # Batch sizes, bucket lengths and cache layouts each cost a guard
        # miss before dynamo goes dynamic; past the limit it would silently
        # fall back to eager.
        config = torch._dynamo.config
        if hasattr(config, "recompile_limit"):
            config.recompile_limit = max(config.recompile_limit, 32)
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]
