"""Next-token choice on the device, per row: greedy (temperature 0) or
temperature + top-p sampling, and the chosen token's log-probability.

Sampling is the Gumbel-max trick with noise that is a hash of (the row's
key, the position, the token id) instead of a random generator's state.
Each draw then depends only on the sequence's seed, prompt, index and
position, never on the batch it ran in: the same configuration samples
the same completions whatever the concurrency, preemptions or GPU count,
and it needs no host synchronisation (it runs inside the decode graph).

On CUDA without top-p, two Triton kernels of ours do it (`sample_triton`):
each row's vocabulary split over many programs, then one merge per row.
Compiled torch makes one program per row of the whole vocabulary, too
little parallelism for a few dozen rows. Elsewhere (CPU, tests, top-p) the
torch code below runs; it is also the reference the kernels are tested on.
"""

from __future__ import annotations

from typing import Optional

import torch

try:  # Triton comes with CUDA builds of torch; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only torch builds
    triton = None

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27: every product below stays inside int64
_SPREAD = 0x9E3779B1  # golden-ratio constant: spreads consecutive token ids
SAMPLE_CHUNK = 2048  # vocabulary entries per program of the Triton path; see sample_triton


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, keys: torch.Tensor,
           positions: torch.Tensor, salts: torch.Tensor, use_top_p: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [rows, vocab] (any float type, read as float32) -> (token ids
    [rows], their log-probs [rows]).
    The log-prob is under the distribution the token was drawn from
    (temperature 1 for greedy rows). `salts` is `token_salts(vocab)`."""
    if logits.is_cuda and triton is not None and not use_top_p:
        return sample_triton(logits, temperature, keys, positions, salts)
    return sample_torch(logits, temperature, top_p, keys, positions, salts, use_top_p)


def sample_torch(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, keys: torch.Tensor,
                 positions: torch.Tensor, salts: torch.Tensor, use_top_p: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample` in torch, on any device: the CPU and top-p path, and the
    reference of the Triton one."""
    sampled = temperature > 0
    scale = torch.where(sampled, temperature, torch.ones_like(temperature))
    scaled = logits.float() / scale[:, None]
    if use_top_p:
        scaled = top_p_mask(scaled, top_p)
    logp = scaled.log_softmax(dim=-1)
    noisy = logp + gumbel_noise(keys, positions, salts)
    token = torch.where(sampled, noisy.argmax(dim=-1), scaled.argmax(dim=-1))
    return token, logp.gather(1, token[:, None]).squeeze(1)


def top_p_mask(scaled: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """-inf outside each row's nucleus: the smallest set of most likely
    tokens whose mass reaches top_p (the most likely token always stays),
    as transformers' TopPLogitsWarper."""
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p[:, None]
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))


def token_salts(vocab: int, device: torch.device) -> torch.Tensor:
    """One 32-bit value per token id (int64), made once: compiled code gets
    them as an input rather than from an index, which inductor computes in
    int32, where the spreading product would overflow."""
    token = torch.arange(vocab, device=device, dtype=torch.long)
    return _mix32((token * _SPREAD) & _MASK32)


def gumbel_noise(keys: torch.Tensor, positions: torch.Tensor, salts: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise [rows, vocab] from a counter-based hash."""
    uniform = ((noise_bits(keys, positions, salts) >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1)
    return -torch.log(-torch.log(uniform))


def noise_bits(keys: torch.Tensor, positions: torch.Tensor, salts: torch.Tensor) -> torch.Tensor:
    """The 32-bit hash [rows, vocab] (int64) that `gumbel_noise` is made of."""
    row = _mix32(keys.long() ^ _mix32(positions.long() & _MASK32))
    return _mix32(row[:, None] ^ salts[None, :])


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) on int64 values < 2**32."""
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    return (x >> 16) ^ x


# -- Triton path (CUDA, no top-p) -------------------------------------------

def sample_triton(logits: torch.Tensor, temperature: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                  salts: torch.Tensor, chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample` without top-p, in two kernels: (rows, chunks) programs each
    reduce `chunk` tokens of a row (max, softmax mass, best candidate), then
    one program a row merges its chunks. No host syncs, outputs made with
    torch.empty, grids from shapes only: capturable in a CUDA graph and
    callable inside torch.compile.

    A sampled row takes argmax(scaled + noise) where torch takes
    argmax(log_softmax(scaled) + noise): the same in exact arithmetic (the
    two differ by a per-row constant), so tokens differ only where float
    rounding breaks a near-tie. Greedy rows take argmax(logits), lowest id
    on ties, exactly as torch. `chunk` is a power of two; tests make it small.

    Chunk of 2048 (4 warps): 1,536 programs at 64 rows x 49,152 vocab, ~12
    per SM of an H200, and merging 24-63 chunks a row (vocab 49k-128k) is
    cheap. Measured there in CUDA graphs, it was the fastest or within 10%
    of it from 1 to 256 rows at 49k and 128k vocab (1,024 and 4,096 close,
    8,192 slower): 64 x 49,152 in 15 us (7.4 us all greedy; most of the rest
    is the two logs of the noise), where compiled torch took 43 us.
    """
    chunk = chunk or SAMPLE_CHUNK
    logits = logits if logits.stride(1) == 1 else logits.contiguous()  # the kernels step through a row by 1
    rows, vocab = logits.shape
    chunks = triton.cdiv(vocab, chunk)
    device = logits.device
    stats = torch.empty(rows, chunks, 3, dtype=torch.float32, device=device)  # chunk max, mass, best value
    picks = torch.empty(rows, chunks, dtype=torch.int32, device=device)  # the best value's token id
    token = torch.empty(rows, dtype=torch.long, device=device)
    logprob = torch.empty(rows, dtype=torch.float32, device=device)
    if rows == 0:
        return token, logprob
    _sample_chunk_kernel[(rows, chunks)](logits, logits.stride(0), temperature, keys, positions, salts, stats, picks,
                                         vocab, CHUNK=chunk, num_warps=4 if chunk <= 2048 else 8)
    _sample_merge_kernel[(rows,)](logits, logits.stride(0), temperature, stats, picks, token, logprob, chunks,
                                  CHUNKS_PAD=max(2, triton.next_power_of_2(chunks)))
    return token, logprob


def gumbel_noise_triton(keys: torch.Tensor, positions: torch.Tensor, salts: torch.Tensor,
                        chunk: int = SAMPLE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(`noise_bits`, `gumbel_noise`) as the sampling kernel computes them:
    for tests, which check them against the torch functions."""
    rows, vocab = keys.shape[0], salts.shape[0]
    bits = torch.empty(rows, vocab, dtype=torch.long, device=salts.device)
    noise = torch.empty(rows, vocab, dtype=torch.float32, device=salts.device)
    _gumbel_noise_kernel[(rows, triton.cdiv(vocab, chunk))](keys, positions, salts, bits, noise, vocab, CHUNK=chunk)
    return bits, noise


if triton is not None:
    _MIX_JIT = tl.constexpr(_MIX)  # a jit function reads module constants only as constexpr

    @triton.jit
    def _mix32_u32(x):
        """`_mix32` in uint32: the wrapping multiply is the int64 product & 2**32 - 1."""
        x = ((x >> 16) ^ x) * _MIX_JIT
        x = ((x >> 16) ^ x) * _MIX_JIT
        return (x >> 16) ^ x

    @triton.jit
    def _token_bits(key, position, salts):
        """`noise_bits` of one row at the tokens whose salts are given (uint32).
        The casts to uint32 keep the low 32 bits, as `& _MASK32` does."""
        row = _mix32_u32(key.to(tl.uint32) ^ _mix32_u32(position.to(tl.uint32)))
        return _mix32_u32(row ^ salts.to(tl.uint32))

    @triton.jit
    def _gumbel(bits):
        """`gumbel_noise` from its bits."""
        uniform = ((bits >> 8).to(tl.float32) + 0.5) * (1.0 / (1 << 24))
        return -tl.log(-tl.log(uniform))

    @triton.jit
    def _finite(top):
        """A max to subtract: 0 for a max of -inf (all its values are -inf, and
        exp(-inf - 0) = 0 where exp(-inf - -inf) would be nan)."""
        return tl.where(top == float("-inf"), 0.0, top)

    @triton.jit
    def _scale_of(Temperature, row):
        """The row's temperature, or 1 for greedy rows (temperature 0)."""
        temperature = tl.load(Temperature + row)
        return tl.where(temperature > 0, temperature, 1.0), temperature > 0

    @triton.jit
    def _sample_chunk_kernel(Logits, stride_lr, Temperature, Keys, Positions, Salts, Stats, Picks, vocab,
                             CHUNK: tl.constexpr):
        """Program (row, chunk): over the chunk's tokens, the max of the scaled
        logits, the mass sum(exp(scaled - max)), and the best candidate
        (scaled + noise for sampled rows, scaled for greedy ones; lowest id
        on ties) with its token id."""
        row = tl.program_id(0)
        chunk = tl.program_id(1)
        tokens = chunk * CHUNK + tl.arange(0, CHUNK)
        in_vocab = tokens < vocab
        scale, sampled = _scale_of(Temperature, row)
        logits = tl.load(Logits + row.to(tl.int64) * stride_lr + tokens, mask=in_vocab, other=float("-inf"))
        scaled = tl.math.div_rn(logits.to(tl.float32), scale)  # rounded as torch's division
        top = tl.max(scaled, axis=0)
        mass = tl.sum(tl.exp(scaled - _finite(top)), axis=0)
        candidates = scaled
        if sampled:  # greedy rows skip the hash
            salts = tl.load(Salts + tokens, mask=in_vocab, other=0)
            bits = _token_bits(tl.load(Keys + row), tl.load(Positions + row), salts)
            candidates = scaled + _gumbel(bits)
        # The best value, then the lowest id that holds it (as torch.argmax): two plain reductions, a little
        # faster than tl.argmax's reduction of (value, index) pairs.
        best = tl.max(candidates, axis=0)
        pick = tl.min(tl.where(candidates == best, tokens, vocab), axis=0)
        stats = Stats + (row * tl.num_programs(1) + chunk) * 3
        tl.store(stats, top)
        tl.store(stats + 1, mass)
        tl.store(stats + 2, best)
        tl.store(Picks + row * tl.num_programs(1) + chunk, pick)

    @triton.jit
    def _sample_merge_kernel(Logits, stride_lr, Temperature, Stats, Picks, Token, Logprob, chunks,
                             CHUNKS_PAD: tl.constexpr):
        """Program row: the log-sum-exp over the chunks' (max, mass), the best
        candidate over chunks (lowest id on ties: chunks are in token order),
        and that token's log-prob, scaled[token] - lse."""
        row = tl.program_id(0)
        parts = tl.arange(0, CHUNKS_PAD)
        used = parts < chunks
        stats = Stats + (row * chunks + parts) * 3
        tops = tl.load(stats, mask=used, other=float("-inf"))
        masses = tl.load(stats + 1, mask=used, other=0.0)
        bests = tl.load(stats + 2, mask=used, other=float("-inf"))
        picks = tl.load(Picks + row * chunks + parts, mask=used, other=0)
        top = tl.max(tops, axis=0)
        lse = top + tl.log(tl.sum(masses * tl.exp(tops - _finite(top)), axis=0))
        best = tl.max(bests, axis=0)
        token = tl.min(tl.where(used & (bests == best), picks, 2147483647), axis=0)  # lowest id on ties
        scale, _ = _scale_of(Temperature, row)
        logit = tl.load(Logits + row.to(tl.int64) * stride_lr + token)
        tl.store(Token + row, token.to(tl.int64))
        tl.store(Logprob + row, tl.math.div_rn(logit.to(tl.float32), scale) - lse)

    @triton.jit
    def _gumbel_noise_kernel(Keys, Positions, Salts, Bits, Noise, vocab, CHUNK: tl.constexpr):
        """Program (row, chunk): the chunk's noise bits and noise, as
        `_sample_chunk_kernel` makes them."""
        row = tl.program_id(0)
        tokens = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
        in_vocab = tokens < vocab
        bits = _token_bits(tl.load(Keys + row), tl.load(Positions + row), tl.load(Salts + tokens, mask=in_vocab))
        at = row.to(tl.int64) * vocab + tokens
        tl.store(Bits + at, bits.to(tl.int64), mask=in_vocab)
        tl.store(Noise + at, _gumbel(bits), mask=in_vocab)
