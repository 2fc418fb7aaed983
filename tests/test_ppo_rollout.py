"""ppo's sampling through the engine (looper_cli/ppo_rollout.py), on the warm
tiny model with real TRL: what TRL hands the rollout hook, whole groups in
one process and across two, which log-probs the loss uses, no stale
weights after an optimizer step, and out of memory as one line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
K = 4
RUN = dict(data="synthetic:8", num_generations=K, batch_size=8, max_new_tokens=16, lr=1e-4, lora_r=8,
           max_steps=1, save_steps=100, logging_steps=1, temperature=0.7)


def make_run(start: Path, out: Path, **options: Any) -> Any:
    """What run_ppo trains: policy, reward, sampler and trainer (ppo.setup_ppo)."""
    from looper_cli.data import load_problems
    from looper_cli.ppo import PPOStageConfig, setup_ppo, start_checkpoint

    cfg = PPOStageConfig(sft=start, output=out, **{**RUN, **options})  # type: ignore[arg-type]
    problems = load_problems(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed)
    return setup_ppo(cfg, start_checkpoint(cfg), problems, out, None)


def recording_generators(sampler: Any, calls: list[tuple[list[list[int]], Any]]) -> None:
    """Let `sampler` build its real generator, noting each generate_ids call."""
    build = sampler.make

    def make(*args: Any) -> Any:
        generator = build(*args)
        generate_ids = generator.generate_ids

        def noted(prompts: Any, cfg: Any, on_prompt_done: Any = None) -> Any:
            calls.append(([list(p) for p in prompts], cfg))
            return generate_ids(prompts, cfg, on_prompt_done)

        generator.generate_ids = noted
        return generator

    sampler.make = make


def test_rollout_hook_gets_k_copies_samples_each_prompt_once_and_returns_aligned_logprobs(
        warm_tiny_model: Path, tmp_path: Path) -> None:
    """TRL 1.16 passes rollout_func each prompt K times in a row (its
    docstring says otherwise); the engine gets each once with samples=K. With
    one generation per step TRL computes no old log-probs (the loss's ratio
    uses the training forward's, detached); the engine's log-probs become
    sampling_per_token_logps, one per completion id, equal to the training
    forward's log-softmax(logits / T) of that token."""
    import torch

    run = make_run(warm_tiny_model, tmp_path / "hook")
    trainer, tokenizer = run.trainer, run.tokenizer
    received: list[list[str]] = []
    calls: list[tuple[list[list[int]], Any]] = []
    recording_generators(run.sampler, calls)
    trainer.rollout_func = lambda prompts, t: (received.append(list(prompts)), run.sampler(prompts, t))[1]

    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)

    rows = [row["prompt"] for row in batch]
    heads = rows[::K]
    assert received == [rows] and len(rows) == 8
    assert rows == [p for p in heads for _ in range(K)] and len(set(heads)) == 2
    [(sent, cfg)] = calls
    assert sent == tokenizer(text=heads)["input_ids"]
    assert run.sampler.config.max_seqs == 8  # rows in flight: this step's completions, not the default 256
    assert (cfg.samples, cfg.logprobs, cfg.temperature, cfg.top_p) == (K, True, 0.7, 1.0)

    assert "old_per_token_logps" not in out  # TRL's loss takes per_token_logps.detach() as the old ones
    sampled, completion_ids, mask = out["sampling_per_token_logps"], out["completion_ids"], out["completion_mask"]
    assert sampled.shape == completion_ids.shape
    trainer.model.eval()  # LoRA dropout off, as while sampling
    with torch.no_grad():
        for i in range(len(rows)):
            prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()]
            completion = completion_ids[i][mask[i].bool()]
            logits = trainer.model(input_ids=torch.cat([prompt, completion])[None]).logits[0].float()
            forward = (logits[len(prompt) - 1:-1] / 0.7).log_softmax(-1).gather(-1, completion[:, None])[:, 0]
            assert torch.allclose(sampled[i][mask[i].bool()], forward, atol=1e-4), i


def greedy_reference(model: Any, prompt: list[int], steps: int, eos: int) -> tuple[list[int], list[float], Any]:
    """transformers' greedy continuation by full forwards (no cache, no
    engine), each chosen token's log-prob, and the first step's distribution."""
    import torch

    ids, logprobs, first = list(prompt), [], None
    with torch.no_grad():
        for _ in range(steps):
            dist = model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
            first = dist if first is None else first
            token = int(dist.argmax())
            ids.append(token)
            logprobs.append(float(dist[token]))
            if token == eos:
                break
    return ids[len(prompt):], logprobs, first


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_engine_samples_the_updated_policy_after_an_optimizer_step(engine: str, warm_tiny_model: Path,
                                                                   tmp_path: Path) -> None:
    """The generator built for step 1's samples (kept across the step, as a
    kept KV cache and CUDA graphs would be) afterwards gives transformers'
    greedy continuation and log-probs on the updated PeftModel. On GPU the
    same holds for captured graphs only because they read parameters by
    address and the optimizer updates them in place: the engine must hold no
    merged or copied weights."""
    from looper_cli.engine.api import SamplingConfig

    run = make_run(warm_tiny_model, tmp_path / engine, engine=engine, lr=1e-2, keep_engine_memory=True)
    model, eos = run.trainer.model, run.tokenizer.eos_token_id
    prompt = run.tokenizer(text=[run.dataset[0]["prompt"]])["input_ids"][0]
    model.eval()
    _, _, first_before = greedy_reference(model, prompt, 1, eos)

    run.trainer.train()
    generator = run.sampler.generator
    assert generator is not None and run.sampler.engine_name == engine  # built before the step
    if engine == "fast":  # later calls skip TRL's unwrapping: the engine holds the trainer's model itself
        assert isinstance(run.sampler._generation_model(run.trainer), contextlib.nullcontext)
        with run.sampler._generation_model(run.trainer) as held:
            assert held is model
    [[got]] = generator.generate_ids([prompt], SamplingConfig(max_new_tokens=8, temperature=0.0, samples=1,
                                                              logprobs=True))
    model.eval()
    ids, logprobs, first_after = greedy_reference(model, prompt, 8, eos)
    assert (first_after - first_before).abs().max() > 1e-3  # the step moved the policy
    assert got.token_ids == ids
    assert np.allclose(got.logprobs, logprobs, atol=1e-4)


@pytest.mark.parametrize("per_device", [4, 8, 2])
def test_each_process_gets_whole_groups_when_its_batch_is_a_multiple_of_k(per_device: int) -> None:
    """TRL's RepeatSampler and accelerate's per-process sharding of the
    DataLoader, as GRPOTrainer sets them up for 2 processes: with the
    per-device batch a multiple of K (what ppo.start_checkpoint enforces)
    every process gets whole groups and no question is on both; at 2 rows
    (refused by ppo: the "split-groups" case of test_train_ppo) a group
    straddles them, which group_heads would catch."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader
    from trl.trainer.utils import RepeatSampler

    from looper_cli.ppo_rollout import group_heads

    processes, questions = 2, list(range(16))

    def process_batches(index: int) -> list[list[int]]:  # each process seeds its own sampler alike
        sampler = RepeatSampler(questions, mini_repeat_count=K, batch_size=per_device * processes // K,
                                repeat_count=1, shuffle=True, seed=0)
        loader = DataLoader(questions, batch_size=per_device, sampler=sampler, collate_fn=list)
        return list(prepare_data_loader(loader, num_processes=processes, process_index=index, put_on_device=False))

    shards = [process_batches(i) for i in range(processes)]
    steps = list(zip(*shards))
    assert len(steps) == len(questions) * K // (per_device * processes)
    if per_device % K:
        with pytest.raises(RuntimeError, match="whole groups"):
            group_heads(steps[0][0], K)
        return
    for batches in steps:
        heads = [group_heads(batch, K) for batch in batches]
        assert not set(heads[0]) & set(heads[1])
    assert sorted(q for batches in steps for batch in batches for q in batch[::K]) == questions


def test_two_processes_score_whole_groups_and_sum_their_tokens(warm_tiny_model: Path, tmp_path: Path) -> None:
    """The child command of `looper ppo --gpus 2`, in 2 CPU processes (torchrun,
    gloo): each Regime W call sees K completions of each of its questions, in
    runs, none of its questions on the other process; summary.json counts the
    tokens and rewards of both."""
    probe, out = tmp_path / "probe", tmp_path / "ppo"
    probe.mkdir()
    env = {**os.environ, "LOOPER_LAUNCHED": "1", "CUDA_VISIBLE_DEVICES": "", "PROBE_DIR": str(probe),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "ppo_groups_probe.py"), "ppo", "--sft", str(warm_tiny_model),
               "--data", "synthetic:8", "--num-generations", str(K), "--batch-size", str(K),
               "--max-new-tokens", "16", "--lora-r", "8", "--max-steps", "2", "-o", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    calls = [[json.loads(line) for line in (probe / f"rank-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(calls[0]) == len(calls[1]) == 2  # one reward call per step and process
    for step in zip(*calls):
        for call in step:
            ids = call["question_id"]
            assert ids == [q for q in ids[::K] for _ in range(K)] and len(set(ids)) == 1  # one whole group
        assert step[0]["question_id"][0] != step[1]["question_id"][0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generated_tokens"] == sum(call["tokens"] for rank in calls for call in rank)
    rewards = [r for rank in calls for call in rank for r in call["rewards"]]
    assert summary["mean_reward"] == pytest.approx(sum(rewards) / len(rewards))
    assert summary["engine"] == "hf" and summary["steps"] == 2


def test_out_of_memory_while_sampling_is_one_line_and_gives_the_memory_back(warm_tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    import torch

    from looper_cli.errors import UserError

    run = make_run(warm_tiny_model, tmp_path / "oom")
    released: list[bool] = []

    class OutOfMemory:  # a generator whose KV cache does not fit
        def generate_ids(self, prompts: Any, cfg: Any, on_prompt_done: Any = None) -> Any:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        def release(self) -> None:
            released.append(True)

    run.sampler.make = lambda *args: OutOfMemory()
    run.trainer.model.train()
    with pytest.raises(UserError, match="--gpu-memory-utilization or --kv-cache-gib") as err:
        run.sampler.sample(run.trainer, [[5, 6, 7]], K)
    assert "\n" not in str(err.value) and released == [True]
