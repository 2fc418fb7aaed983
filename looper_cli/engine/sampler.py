"""Next-token choice on the device, per row: greedy (temperature 0) or
temperature + top-p sampling, and the chosen token's log-probability.

Sampling is the Gumbel-max trick with noise that is a hash of (the row's
key, the position, the token id) instead of a random generator's state.
Each draw then depends only on the sequence's seed, prompt, index and
position, never on the batch it ran in: the same configuration samples
the same completions whatever the concurrency, preemptions or GPU count,
and it needs no host synchronisation (it runs inside the decode graph).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27: every product below stays inside int64
_SPREAD = 0x9E3779B1  # golden-ratio constant: spreads consecutive token ids


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, keys: torch.Tensor,
           positions: torch.Tensor, salts: torch.Tensor, use_top_p: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [rows, vocab] float32 -> (token ids [rows], their log-probs [rows]).
    The log-prob is under the distribution the token was drawn from
    (temperature 1 for greedy rows). `salts` is `token_salts(vocab)`."""
    sampled = temperature > 0
    scale = torch.where(sampled, temperature, torch.ones_like(temperature))
    scaled = logits / scale[:, None]
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
    row = _mix32(keys.long() ^ _mix32(positions.long() & _MASK32))
    bits = _mix32(row[:, None] ^ salts[None, :])
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1), never 0 or 1
    return -torch.log(-torch.log(uniform))


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) on int64 values < 2**32."""
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    return (x >> 16) ^ x
