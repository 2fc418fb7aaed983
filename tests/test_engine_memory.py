"""The engine's memory pieces on their own: blocks shared by the K samples of
a prompt and copied on write, the scheduler's admission and preemption, and
the Triton paged-attention kernel against the torch reference (run by
Triton's interpreter on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from looper_cli.engine.api import SamplingConfig
from looper_cli.engine.block_manager import BlockManager
from looper_cli.engine.scheduler import Scheduler
from looper_cli.engine.sequence import fork, make_group

ROOT = Path(__file__).resolve().parent.parent


def leader_with_prompt(length: int, samples: int, blocks: BlockManager):
    group = make_group(0, list(range(1, length + 1)), SamplingConfig(samples=samples, max_new_tokens=8))
    leader = group.sequences[0]
    blocks.grow(leader, length, [])
    leader.num_computed = length
    return group, leader


def test_forks_share_prompt_blocks_and_copy_the_partial_one_on_write():
    blocks = BlockManager(num_blocks=10, block_size=4)
    group, leader = leader_with_prompt(6, samples=3, blocks=blocks)  # blocks: [full, half full]
    members = [leader] + [fork(leader, i, blocks.fork(leader)) for i in (1, 2)]
    assert [blocks.refs[b] for b in leader.block_table] == [3, 3]
    copies: list[tuple[int, int]] = []
    for seq in members:
        assert blocks.new_blocks_needed(seq, 7) == (1 if blocks.refs[seq.block_table[1]] > 1 else 0)
        blocks.grow(seq, 7, copies)
    shared_full, shared_half = leader.block_table[0], members[2].block_table[1]
    assert len(copies) == 2 and all(src == shared_half for src, _ in copies)  # the last writer keeps it
    assert blocks.refs[shared_full] == 3 and blocks.refs[shared_half] == 1
    assert len({seq.block_table[1] for seq in members}) == 3
    for seq in members:
        blocks.free(seq)
    assert blocks.num_free == blocks.usable_blocks and blocks.peak_used == 4


def test_a_prompt_on_a_block_boundary_needs_no_copy():
    blocks = BlockManager(num_blocks=10, block_size=4)
    _, leader = leader_with_prompt(8, samples=2, blocks=blocks)
    other = fork(leader, 1, blocks.fork(leader))
    assert blocks.new_blocks_needed(other, 9) == 1  # a fresh block, nothing copied
    copies: list[tuple[int, int]] = []
    blocks.grow(other, 9, copies)
    assert copies == [] and blocks.refs[leader.block_table[1]] == 2


def test_scheduler_admits_whole_groups_and_preempts_the_newest():
    blocks = BlockManager(num_blocks=9, block_size=4)  # 8 usable blocks
    scheduler = Scheduler(blocks, max_seqs=4, max_batched_tokens=100, horizon=4)
    cfg = SamplingConfig(samples=2, max_new_tokens=30)
    groups = [make_group(i, [5] * 6, cfg) for i in range(3)]
    for group in groups:
        scheduler.add(group.sequences[0])
    first = scheduler.schedule()
    assert [c.seq.group.index for c in first.prefill] == [0, 1]  # 2 groups x 2 samples fill 4 seats
    for chunk in first.prefill:  # what the generator does after the prefill
        leader = chunk.seq
        leader.num_computed = len(leader.token_ids)
        leader.group.sequences.append(fork(leader, 1, blocks.fork(leader)))
        leader.group.forked = True
        for seq in leader.group.sequences:
            seq.token_ids.append(7)
            scheduler.start_running(seq)
    for _ in range(4):  # decode rounds until the blocks run out
        work = scheduler.schedule()
        for seq in work.decode:
            seq.num_computed += work.horizon
            seq.token_ids += [7] * work.horizon
        if work.preempted:
            break
    assert work.preempted and scheduler.waiting[0].group.index == 1  # the newest group goes back first
    assert scheduler.waiting[0].num_computed == 0 and not scheduler.waiting[0].block_table


TRITON_CHECK = """
import itertools
import torch
from looper_cli.engine.attention import decode_attention, paged_decode_reference, paged_decode_triton, write_kv
torch.manual_seed(0)
# The default tile (one per row here), and 16-key tiles: several per row, so the online softmax rescales.
for tile, (heads, kv, dim, block) in itertools.product((None, 16), ((9, 3, 64, 16), (8, 2, 32, 4), (4, 4, 16, 32))):
    rows, blocks = 6, 48
    q = torch.randn(rows, heads, dim)
    k, v = torch.randn(blocks, block, kv, dim), torch.randn(blocks, block, kv, dim)
    lens = torch.tensor([0, 1, 17, 100, 64, 33], dtype=torch.int32)[:rows]
    tables = (torch.randperm(blocks - 1)[: rows * 7] + 1).reshape(rows, 7).to(torch.int32)
    lens = lens.clamp(max=7 * block)
    want = paged_decode_reference(q, k, v, tables, lens, dim ** -0.5)
    got = paged_decode_triton(q, k, v, tables, lens, dim ** -0.5, tile=tile)
    assert (got - want).abs().max() < 1e-4, (tile, heads, kv, dim, block, (got - want).abs().max())
    assert got[0].abs().max() == 0  # a row with no context attends to nothing
    # Decode mode: the fed token's k, v (strided, as split from a fused projection) are stored at each
    # row's slot, the last of its positions, and attended from registers; padding rows write slot 0.
    fused = torch.randn(rows, kv, 3 * dim)
    k_new, v_new = fused[:, :, :dim], fused[:, :, dim:2 * dim]
    at = (lens - 1).clamp(min=0).long()
    slots = torch.where(lens > 0, tables.gather(1, (at // block)[:, None]).squeeze(1).long() * block + at % block,
                        torch.zeros_like(at))
    want_k, want_v = k.clone(), v.clone()
    write_kv(want_k, want_v, slots, k_new, v_new)
    want = paged_decode_reference(q, want_k, want_v, tables, lens, dim ** -0.5)
    got = paged_decode_triton(q, k, v, tables, lens, dim ** -0.5, (k_new, v_new, slots), tile=tile)
    assert (got - want).abs().max() < 1e-4, ("new", tile, heads, kv, dim, block, (got - want).abs().max())
    assert torch.equal(k[1:], want_k[1:]) and torch.equal(v[1:], want_v[1:])  # block 0 is the trash block
    assert got[0].abs().max() == 0
    # ... with rope: q and the new key come unrotated (q strided, as split from a fused projection), the
    # kernel rotates both, and the cache holds the rotated key, as decode_attention's torch path does.
    q_strided = torch.randn(rows, heads + 1, dim)[:, :heads]
    angles = torch.randn(rows, 1, dim // 2)
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    want_k, want_v = k.clone(), v.clone()
    want = decode_attention(q_strided, k_new, v_new, want_k, want_v, slots, tables, lens, dim ** -0.5, (cos, sin))
    got_k, got_v = k.clone(), v.clone()
    got = paged_decode_triton(q_strided, got_k, got_v, tables, lens, dim ** -0.5, (k_new, v_new, slots),
                              rope=(cos, sin), tile=tile)
    assert (got - want).abs().max() < 1e-4, ("rope", tile, heads, kv, dim, block, (got - want).abs().max())
    assert (got_k - want_k).abs().max() < 1e-5 and torch.equal(got_v, want_v)
print("ok")
"""


def test_triton_paged_decode_kernel_equals_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


SAMPLER_CHECK = """
import torch
from looper_cli.engine.sampler import (gumbel_noise, gumbel_noise_triton, noise_bits, sample_torch, sample_triton,
                                       token_salts)
torch.manual_seed(0)
# 5,000 tokens in chunks of 1,024: the last chunk is partly past the vocabulary.
rows, vocab, chunk = 8, 5000, 1024
logits = torch.randn(rows, vocab) * 3
temperature = torch.tensor([0.0, 0.7, 1.0, 1.3, 0.0, 1.0, 0.7, 1.3])
logits[4, [3001, 17, 4999]] = 20.0  # ties in a greedy row, across chunks: the lowest id wins, as torch.argmax
logits[4, 4000:4096] = float("-inf")  # a whole chunk of -inf: no mass, no nan
keys = torch.randint(0, 2 ** 32, (rows,))
positions = torch.randint(0, 2 ** 20, (rows,))
salts = token_salts(vocab, torch.device("cpu"))
# The kernel's hash is the torch one, bit for bit. Its noise is within float32 rounding here only because the
# interpreter's log is numpy's, not torch's (on an H200 the kernel's noise equalled torch's CUDA noise bit for bit).
bits, noise = gumbel_noise_triton(keys, positions, salts, chunk)
assert torch.equal(bits, noise_bits(keys, positions, salts))
assert torch.allclose(noise, gumbel_noise(keys, positions, salts), rtol=1e-6, atol=1e-6)
want_token, want_logp = sample_torch(logits, temperature, torch.ones(rows), keys, positions, salts, False)
got_token, got_logp = sample_triton(logits, temperature, keys, positions, salts, chunk)
assert got_token.dtype == torch.long and got_logp.dtype == torch.float32
assert torch.equal(got_token, want_token), (got_token, want_token)
assert got_token[4] == 17
assert (got_logp - want_logp).abs().max() < 1e-5, (got_logp - want_logp).abs().max()
# Decode hands over the head's bf16 logits: both paths read them as float32.
half = logits.bfloat16()
want_token, want_logp = sample_torch(half, temperature, torch.ones(rows), keys, positions, salts, False)
got_token, got_logp = sample_triton(half, temperature, keys, positions, salts, chunk)
assert torch.equal(got_token, want_token) and (got_logp - want_logp).abs().max() < 1e-5
print("ok")
"""


def test_triton_sampler_equals_the_torch_sampler():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SAMPLER_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
