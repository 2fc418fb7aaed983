"""Attention over the paged KV cache.

The cache of one layer is `[num_blocks, block_size, kv_heads, head_dim]`
for keys and the same for values; a row's keys are the slots its block
table names, in order.

- `decode_attention`: one query per row. On CUDA a Triton kernel of ours
  applies rope to the query and the fed token's key, stores that key and
  value, reads only the blocks each row owns, once, with all query heads
  of a KV head together (GQA without copying the cache); elsewhere (CPU,
  tests) the same steps run in torch: rope, `write_kv`, and the reference
  that gathers the row's blocks and calls SDPA.
  Why a kernel of our own, not the gather: the gather copies every row's
  keys and values each step (three passes over the KV bytes instead of
  one), which at 8B and 256 rows is most of a decode step. Figures:
  docs/perf-notes.md ("paged decode attention").
- `prefill_attention`: the new tokens of a few sequences, each attending
  to its cached prefix and causally to itself; padded per sequence and run
  through SDPA (prefill is a small share of the work, and runs eagerly).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from looper_cli.engine.llama import rotate

try:  # Triton comes with CUDA builds of torch; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only torch builds
    triton = None


def write_kv(cache_k: torch.Tensor, cache_v: torch.Tensor, slots: torch.Tensor,
             k: torch.Tensor, v: torch.Tensor) -> None:
    """Store k, v [tokens, kv_heads, head_dim] at flat cache slots [tokens]."""
    kv_heads, head_dim = cache_k.shape[2:]
    cache_k.view(-1, kv_heads, head_dim).index_copy_(0, slots, k)
    cache_v.view(-1, kv_heads, head_dim).index_copy_(0, slots, v)


def decode_attention(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, cache_k: torch.Tensor,
                     cache_v: torch.Tensor, slots: torch.Tensor, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, scale: float,
                     rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """One decode step's attention: store the fed token's k_new, v_new
    [rows, kv_heads, d] at cache `slots` [rows], then q [rows, heads, d] ->
    [rows, heads, d], row r attending to its first context_lens[r] positions,
    the fed token last (0: output zeros). With `rope` = (cos, sin) [rows, 1, d],
    q and k_new are rotated first. On CUDA one kernel does all of it: it
    rotates q and the new key, uses the new key and value from registers and
    stores them, so a layer runs no separate rope or cache-write kernels."""
    if q.is_cuda and triton is not None:
        return paged_decode_triton(q, cache_k, cache_v, block_tables, context_lens, scale, (k_new, v_new, slots),
                                   rope=rope)
    if rope is not None:
        q, k_new = rotate(q, *rope), rotate(k_new, *rope)
    write_kv(cache_k, cache_v, slots, k_new, v_new)
    return paged_decode_reference(q, cache_k, cache_v, block_tables, context_lens, scale)


def gather_positions(cache: torch.Tensor, block_tables: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` positions of each row's table: [rows, length, kv_heads, head_dim]."""
    block_size = cache.shape[1]
    positions = torch.arange(length, device=cache.device)
    slots = block_tables[:, positions // block_size].long() * block_size + positions % block_size
    return cache.flatten(0, 1)[slots]


def paged_decode_reference(q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float) -> torch.Tensor:
    rows, heads, head_dim = q.shape
    kv_heads = cache_k.shape[2]
    length = max(1, int(context_lens.max()))
    keys = gather_positions(cache_k, block_tables, length).transpose(1, 2)  # [rows, kv, T, d]
    values = gather_positions(cache_v, block_tables, length).transpose(1, 2)
    visible = torch.arange(length, device=q.device)[None] < context_lens[:, None]  # [rows, T]
    qg = q.reshape(rows, kv_heads, heads // kv_heads, head_dim)
    # A row with nothing visible would be all -inf (NaN); let it see slot 0, then zero it.
    mask = (visible | (context_lens[:, None] == 0))[:, None, None]
    out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=mask, scale=scale)
    out = out.masked_fill((context_lens == 0)[:, None, None, None], 0.0)
    return out.reshape(rows, heads, head_dim)


def paged_decode_triton(q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                        block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                        new: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                        tile: Optional[int] = None,
                        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                        warps: Optional[int] = None) -> torch.Tensor:
    """The kernel's launch. With `new` = (k_new, v_new, slots) the last of a
    row's context_lens positions is the fed token: its key and value come
    from k_new / v_new and are stored at slots; without, every position is
    read from the cache. With `rope` = (cos, sin) [rows, 1, d] (decode mode
    only) q and k_new come unrotated and the kernel rotates them."""
    rows, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = cache_k.shape
    group = heads // kv_heads
    out = torch.empty_like(q)
    # Keys per loop iteration and warps per program, as measured in a CUDA graph on an H200 (run 18,
    # `bench_engine.py attention`): at head_dim 128 (8B, 16 rows, 640-1,280 positions) 256 keys with 8
    # warps took 29.7 us where 64 keys with 4 took 39.9; at head_dim 64 (SmolLM2, 64 rows, 128-384
    # positions) 128 keys with 4 warps were as fast as any (7.1-9.1 us). Never less than a block.
    wide = head_dim >= 128
    tile = tile or max(block_size, 256 if wide else 128)
    warps = warps or (8 if wide else 4)
    k_new, v_new, slots = new if new is not None else (q, q, context_lens)  # unread placeholders
    k_new, v_new, q = (t if t.stride(-1) == 1 else t.contiguous() for t in (k_new, v_new, q))  # the kernel's layout
    if rope is not None and new is None:
        raise ValueError("rope is applied in decode mode only (with the new keys and values)")
    cos, sin = (t.reshape(rows, head_dim) for t in rope) if rope is not None else (q, q)  # unread placeholders
    _paged_decode_kernel[(rows, kv_heads)](
        q, cache_k, cache_v, out, block_tables, context_lens, scale, k_new, v_new, slots, cos, sin,
        q.stride(0), q.stride(1), cache_k.stride(0), cache_k.stride(1), cache_k.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), cos.stride(0), sin.stride(0),
        BLOCK_SIZE=block_size, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, TILE=tile, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        HAS_NEW=new is not None, ROPE=rope is not None, num_warps=warps, num_stages=2)
    return out


if triton is not None:
    @triton.jit
    def _rotated(base, dims, swapped, sign, cos, sin, mask):
        """Rope of the vectors at base + dims: x * cos + rotate_half(x) * sin,
        where rotate_half(x)[i] = sign[i] * x[swapped[i]], in float32 and
        rounded once to x's type (as the compiled rope it replaces)."""
        x = tl.load(base + dims, mask=mask, other=0.0)
        half = tl.load(base + swapped, mask=mask, other=0.0)
        return (x.to(tl.float32) * cos + half.to(tl.float32) * sign * sin).to(x.dtype)

    @triton.jit
    def _paged_decode_kernel(Q, K, V, Out, Tables, Lens, scale, KNew, VNew, Slots, Cos, Sin,
                             stride_qr, stride_qh, stride_kb, stride_ks, stride_kh,
                             stride_tr, stride_or, stride_oh, stride_knr, stride_knh, stride_vnr, stride_vnh,
                             stride_cr, stride_sr,
                             BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
                             HEAD_DIM: tl.constexpr, TILE: tl.constexpr, PRECISION: tl.constexpr,
                             HAS_NEW: tl.constexpr, ROPE: tl.constexpr):
        """One program per (row, KV head): the GROUP query heads of that KV
        head against the row's keys, TILE at a time, with an online softmax.
        float32 models multiply in full precision ("ieee"): tf32 changed one
        greedy sequence in 24 against transformers on an H200.
        With HAS_NEW the fed token (the row's last position) is not read
        back: its key and value are stored at the row's slot and joined to
        the softmax from registers. The loop never reads that slot, and no
        other row owns it (a decode row writes into a private block).
        With ROPE (decode mode) q and the new key are rotated here: a layer's
        rope costs no kernel of its own."""
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        length = tl.load(Lens + row)
        heads = tl.arange(0, GROUP_PAD)
        dims = tl.arange(0, HEAD_DIM)
        head_ok = heads < GROUP
        q_rows = Q + row * stride_qr + (kv_head * GROUP + heads)[:, None] * stride_qh
        swapped = (dims + HEAD_DIM // 2) % HEAD_DIM
        sign = tl.where(dims < HEAD_DIM // 2, -1.0, 1.0)
        if ROPE:  # the row's cos/sin, for q here and the new key below
            cos = tl.load(Cos + row * stride_cr + dims).to(tl.float32)
            sin = tl.load(Sin + row * stride_sr + dims).to(tl.float32)
            q = _rotated(q_rows, dims[None, :], swapped[None, :], sign[None, :], cos[None, :], sin[None, :],
                         head_ok[:, None])
        else:
            q = tl.load(q_rows + dims[None, :], mask=head_ok[:, None], other=0.0)
        best = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        total = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        cached = length
        if HAS_NEW:
            k_row = KNew + row * stride_knr + kv_head * stride_knh
            if ROPE:
                k_new = _rotated(k_row, dims, swapped, sign, cos, sin, dims < HEAD_DIM)
            else:
                k_new = tl.load(k_row + dims)
            v_new = tl.load(VNew + row * stride_vnr + kv_head * stride_vnh + dims)
            slot = tl.load(Slots + row)
            at = (slot // BLOCK_SIZE) * stride_kb + (slot % BLOCK_SIZE) * stride_ks + kv_head * stride_kh
            tl.store(K + at + dims, k_new)
            tl.store(V + at + dims, v_new)
            cached = tl.maximum(length - 1, 0)
        for start in range(0, cached, TILE):
            pos = start + tl.arange(0, TILE)
            in_row = pos < cached
            block = tl.load(Tables + row * stride_tr + pos // BLOCK_SIZE, mask=in_row, other=0)
            offset = block.to(tl.int64) * stride_kb + (pos % BLOCK_SIZE) * stride_ks + kv_head * stride_kh
            k = tl.load(K + offset[:, None] + dims[None, :], mask=in_row[:, None], other=0.0)
            v = tl.load(V + offset[:, None] + dims[None, :], mask=in_row[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            scores = tl.where(in_row[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, axis=1))
            weights = tl.exp(scores - new_best[:, None])
            rescale = tl.exp(best - new_best)
            total = total * rescale + tl.sum(weights, axis=1)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
            best = new_best
        if HAS_NEW:
            seen = length > 0
            score = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], axis=1) * scale
            new_best = tl.maximum(best, score)
            weight = tl.where(seen, tl.exp(score - new_best), 0.0)
            rescale = tl.where(seen, tl.exp(best - new_best), 1.0)
            total = total * rescale + weight
            acc = acc * rescale[:, None] + weight[:, None] * v_new.to(tl.float32)[None, :]
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        o_ptr = Out + row * stride_or + (kv_head * GROUP + heads)[:, None] * stride_oh + dims[None, :]
        tl.store(o_ptr, out.to(Out.dtype.element_ty), mask=head_ok[:, None])


PREFILL_ALIGN = 64
# Not cuDNN: it builds an execution plan for every new shape (~0.4 s on an H100, pytorch/torchtune#1652,
# sgl-project/sglang#4650), and prefill shapes change with every batch of prompts.
PREFILL_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class PrefillLayout:
    """Where the new tokens of a prefill call sit once padded per sequence,
    and what each may see: built once per call, used by every layer (one
    scatter and one gather a layer instead of a copy per sequence)."""

    def __init__(self, starts: list[int], lengths: list[int], device: torch.device):
        # Padded to a multiple of PREFILL_ALIGN: attention kernels that plan per shape meet few shapes.
        self.count, self.longest = len(lengths), -(-max(lengths) // PREFILL_ALIGN) * PREFILL_ALIGN
        self.context = max(s + n for s, n in zip(starts, lengths))
        # Fresh prompts: the new keys are the whole context (no cache read).
        self.fresh = all(s == 0 for s in starts)
        self.rows = torch.tensor([i * self.longest + j for i, n in enumerate(lengths) for j in range(n)],
                                 device=device)
        # Fresh prompts need no mask: padded at the end, each is causal from position 0
        # (is_causal), which lets SDPA take its flash kernel (a boolean mask rules it out).
        self.mask = None if self.fresh else self._mask(starts, lengths, device)

    def _mask(self, starts: list[int], lengths: list[int], device: torch.device) -> torch.Tensor:
        """[n, 1, longest, context]: what each new token may see of its sequence."""
        start = torch.tensor(starts, device=device)[:, None, None]
        count = torch.tensor(lengths, device=device)[:, None, None]
        qi = torch.arange(self.longest, device=device)[None, :, None]
        kj = torch.arange(self.context, device=device)[None, None, :]
        # Padded queries see slot 0 only, so no softmax row is empty (NaN); they are dropped after.
        visible = ((kj <= start + qi) & (qi < count)) | (kj == 0)
        return visible[:, None]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[tokens, ...] -> [n, longest, ...], zeros in the padding."""
        out = x.new_zeros((self.count * self.longest,) + tuple(x.shape[1:]))
        out.index_copy_(0, self.rows, x)
        return out.view((self.count, self.longest) + tuple(x.shape[1:]))

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((self.count * self.longest,) + tuple(x.shape[2:]))[self.rows]


def prefill_attention(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, cache_k: torch.Tensor,
                      cache_v: torch.Tensor, block_tables: torch.Tensor, layout: PrefillLayout,
                      scale: float) -> torch.Tensor:
    """q [tokens, heads, d] of several sequences laid end to end (each one's
    new tokens, from its position in `layout`); their keys are already in the
    cache. Returns [tokens, heads, d]."""
    if layout.fresh:
        keys, values = layout.pad(k_new), layout.pad(v_new)
    else:
        keys = gather_positions(cache_k, block_tables, layout.context)
        values = gather_positions(cache_v, block_tables, layout.context)
    queries = layout.pad(q).transpose(1, 2)  # [n, heads, longest, d]
    with sdpa_kernel(PREFILL_BACKENDS):
        out = F.scaled_dot_product_attention(queries, keys.transpose(1, 2), values.transpose(1, 2),
                                             attn_mask=layout.mask, is_causal=layout.fresh, scale=scale,
                                             enable_gqa=True)
    return layout.unpad(out.transpose(1, 2))  # [tokens, heads, d]
