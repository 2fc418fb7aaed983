"""A decode step's projections fused with their neighbours, on CUDA.

At a few dozen rows a small model's decode layer is a chain of kernels each
at its latency floor: for SmolLM2 at 64 rows, four cuBLAS matmuls (~4 us
each), three compiled kernels for the norms, residual adds and SiLU-mul
(~1.3 us each) and attention; their number, not bytes or FLOPs, set the
step's time (docs/perf-notes.md, run 19). Here a layer is five kernels:

- `norm_linear`: RMSNorm(x) @ [W1; W2; ...].T, the norm in the prologue
  (q, k and v; also the lm_head after the final norm);
- `norm_gate_up`: SiLU(n @ Wg.T) * (n @ Wu.T), n = RMSNorm(x);
- `linear_residual`: x + h @ W.T (o_proj, down_proj);
- attention (attention.py) between the first two.

Rounding follows transformers' Llama: the norm in float32, rounded to the
model's dtype before its weight multiplies; each projection rounded before
the activation, the product or the residual add.

The weights of one matmul may be several tensors (q, k and v of a model
without an adapter, read in place): a program's column tile lies inside one
of them, so the tile width must divide each one's rows (`tile_fits`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

try:  # Triton comes with CUDA builds of torch; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only torch builds
    triton = None

MAX_PARTS = 3  # weights one matmul may read (q, k, v)


class Tiles:
    """A launch's tile sizes: rows (BLOCK_M), output columns (BLOCK_N), the
    inner dimension per iteration (BLOCK_K), warps and pipeline stages."""

    def __init__(self, n: int, k: int, warps: int = 4, stages: int = 3):
        self.n, self.k, self.warps, self.stages = n, k, warps, stages

    def __repr__(self) -> str:
        return f"Tiles(n={self.n}, k={self.k}, warps={self.warps}, stages={self.stages})"


def default_tiles(rows: int, inner: int, columns: int) -> Tiles:
    """Tiles for a [rows, inner] x [inner, columns] product. At decode's row
    counts each program's weight tile is read once, so narrow column tiles
    give enough programs to keep the GPU's loads in flight."""
    del rows, inner
    return Tiles(n=32 if columns >= 2048 else 16, k=128)


def tile_fits(weights: Sequence[torch.Tensor], tiles: Tiles) -> bool:
    return all(w.shape[0] % tiles.n == 0 for w in weights)


def _block_m(rows: int) -> int:
    return min(64, max(16, triton.next_power_of_2(rows)))


def _precision(x: torch.Tensor) -> str:
    """float32 models multiply in full precision, as the attention kernel (tf32 changes greedy tokens)."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _parts(weights: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Up to MAX_PARTS weights (placeholders repeat the last) and the column where each after the first starts."""
    if not 1 <= len(weights) <= MAX_PARTS:
        raise ValueError(f"1 to {MAX_PARTS} weights, not {len(weights)}")
    ends = [sum(w.shape[0] for w in weights[:i + 1]) for i in range(len(weights))]
    padded = list(weights) + [weights[-1]] * (MAX_PARTS - len(weights))
    ends += [ends[-1]] * (MAX_PARTS - len(weights))
    return padded, ends


def norm_linear(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, weights: Sequence[torch.Tensor],
                tiles: Optional[Tiles] = None) -> torch.Tensor:
    """RMSNorm(x; norm_weight, eps) @ concat(weights).T: x [rows, inner] ->
    [rows, sum of the weights' rows]."""
    rows, inner = x.shape
    parts, ends = _parts(weights)
    tiles = tiles or default_tiles(rows, inner, ends[-1])
    out = torch.empty((rows, ends[-1]), dtype=x.dtype, device=x.device)
    block_m = _block_m(rows)
    grid = (triton.cdiv(rows, block_m), ends[-1] // tiles.n)
    _norm_linear_kernel[grid](
        x, norm_weight, parts[0], parts[1], parts[2], out, rows, inner, ends[0], ends[1], eps,
        x.stride(0), parts[0].stride(0), parts[1].stride(0), parts[2].stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=tiles.n, BLOCK_K=tiles.k, GATED=False, PRECISION=_precision(x),
        num_warps=tiles.warps, num_stages=tiles.stages)
    return out


def norm_gate_up(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, gate: torch.Tensor, up: torch.Tensor,
                 tiles: Optional[Tiles] = None) -> torch.Tensor:
    """SiLU(n @ gate.T) * (n @ up.T) with n = RMSNorm(x): [rows, inner] -> [rows, gate rows]."""
    rows, inner = x.shape
    width = gate.shape[0]
    tiles = tiles or default_tiles(rows, inner, 2 * width)
    out = torch.empty((rows, width), dtype=x.dtype, device=x.device)
    block_m = _block_m(rows)
    grid = (triton.cdiv(rows, block_m), width // tiles.n)
    _norm_linear_kernel[grid](
        x, norm_weight, gate, up, up, out, rows, inner, width, width, eps,
        x.stride(0), gate.stride(0), up.stride(0), up.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=tiles.n, BLOCK_K=tiles.k, GATED=True, PRECISION=_precision(x),
        num_warps=tiles.warps, num_stages=tiles.stages)
    return out


def linear_residual(h: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor,
                    tiles: Optional[Tiles] = None) -> torch.Tensor:
    """residual + h @ weight.T: h [rows, inner], residual [rows, weight rows]."""
    rows, inner = h.shape
    width = weight.shape[0]
    tiles = tiles or default_tiles(rows, inner, width)
    out = torch.empty_like(residual)
    block_m = _block_m(rows)
    grid = (triton.cdiv(rows, block_m), width // tiles.n)
    _linear_residual_kernel[grid](
        h, weight, residual, out, rows, inner, h.stride(0), weight.stride(0), residual.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=tiles.n, BLOCK_K=tiles.k, PRECISION=_precision(h), num_warps=tiles.warps,
        num_stages=tiles.stages)
    return out


# Hidden sizes up to this run decode's projections fused by default (`EngineConfig.fused_linear`
# None): there a step is bound by kernel count; larger models' matmuls stream their weights, which
# cuBLAS does well. See docs/perf-notes.md, run 20.
FUSED_MAX_HIDDEN = 2048


def refusal(layers: Sequence, hidden_act: str, dtype: torch.dtype, device: torch.device,
            forced: bool) -> Optional[str]:
    """Why decode cannot (or, unless `forced`, should not) run fused: None if it can."""
    if triton is None:
        return "no Triton"
    if hidden_act != "silu":
        return f"activation {hidden_act!r}, not silu"
    norms = [n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    if not all(hasattr(n, "variance_epsilon") and getattr(n, "weight", None) is not None for n in norms):
        return "norms other than LlamaRMSNorm"
    if forced:
        return None
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return "not a 16-bit model on CUDA"
    if norms and norms[0].weight.shape[0] > FUSED_MAX_HIDDEN:
        return f"hidden size over {FUSED_MAX_HIDDEN}"
    return None


def reference_norm(x: torch.Tensor, norm_weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm, the kernels' reference."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return norm_weight * h.to(x.dtype)


if triton is not None:
    @triton.jit
    def _inverse_rms(X, stride_x, rows, inner, eps, m, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """1 / RMS of rows m of X [rows, inner], in float32 (a first pass over the rows)."""
        squares = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, inner, BLOCK_K):
            ks = start + tl.arange(0, BLOCK_K)
            x = tl.load(X + m[:, None] * stride_x + ks[None, :], mask=(m < rows)[:, None] & (ks < inner)[None, :],
                        other=0.0).to(tl.float32)
            squares += tl.sum(x * x, axis=1)
        return tl.rsqrt(squares / inner + eps)

    @triton.jit
    def _norm_linear_kernel(X, G, W0, W1, W2, Out, rows, inner, end0, end1, eps,
                            stride_x, stride_w0, stride_w1, stride_w2, stride_o,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GATED: tl.constexpr, PRECISION: tl.constexpr):
        """Program (row tile, column tile). Ungated: the column tile's weight
        rows come from W0 below end0, W1 below end1, else W2. Gated: the tile
        multiplies by W0 (gate) and W1 (up) rows and stores SiLU(gate) * up."""
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        column = tl.program_id(1) * BLOCK_N
        n = tl.arange(0, BLOCK_N)
        dtype = Out.dtype.element_ty
        if GATED:
            w, stride_w, local = W0, stride_w0, column
        elif column < end0:
            w, stride_w, local = W0, stride_w0, column
        elif column < end1:
            w, stride_w, local = W1, stride_w1, column - end0
        else:
            w, stride_w, local = W2, stride_w2, column - end1
        inverse_rms = _inverse_rms(X, stride_x, rows, inner, eps, m, BLOCK_M, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, inner, BLOCK_K):
            ks = start + tl.arange(0, BLOCK_K)
            k_ok = ks < inner
            x = tl.load(X + m[:, None] * stride_x + ks[None, :], mask=(m < rows)[:, None] & k_ok[None, :], other=0.0)
            g = tl.load(G + ks, mask=k_ok, other=0.0)
            normed = (x.to(tl.float32) * inverse_rms[:, None]).to(dtype)
            normed = (g.to(tl.float32)[None, :] * normed.to(tl.float32)).to(dtype)
            wt = tl.load(w + (local + n)[None, :] * stride_w + ks[:, None], mask=k_ok[:, None], other=0.0)
            acc = tl.dot(normed, wt, acc, input_precision=PRECISION)
            if GATED:
                ut = tl.load(W1 + (column + n)[None, :] * stride_w1 + ks[:, None], mask=k_ok[:, None], other=0.0)
                acc_up = tl.dot(normed, ut, acc_up, input_precision=PRECISION)
        if GATED:
            gate = acc.to(dtype).to(tl.float32)
            act = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
            out = act * acc_up.to(dtype).to(tl.float32)
        else:
            out = acc
        tl.store(Out + m[:, None] * stride_o + (column + n)[None, :], out.to(dtype), mask=(m < rows)[:, None])

    @triton.jit
    def _linear_residual_kernel(H, W, R, Out, rows, inner, stride_h, stride_w, stride_r, stride_o,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                                PRECISION: tl.constexpr):
        """Program (row tile, column tile): R + round(H @ W.T), rounded."""
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        dtype = Out.dtype.element_ty
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, inner, BLOCK_K):
            ks = start + tl.arange(0, BLOCK_K)
            k_ok = ks < inner
            h = tl.load(H + m[:, None] * stride_h + ks[None, :], mask=(m < rows)[:, None] & k_ok[None, :], other=0.0)
            wt = tl.load(W + n[None, :] * stride_w + ks[:, None], mask=k_ok[:, None], other=0.0)
            acc = tl.dot(h, wt, acc, input_precision=PRECISION)
        row_ok = (m < rows)[:, None]
        residual = tl.load(R + m[:, None] * stride_r + n[None, :], mask=row_ok, other=0.0).to(tl.float32)
        out = acc.to(dtype).to(tl.float32) + residual
        tl.store(Out + m[:, None] * stride_o + n[None, :], out.to(dtype), mask=row_ok)
