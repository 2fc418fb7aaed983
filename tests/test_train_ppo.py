"""looper ppo on the warm tiny model: GRPO with the Regime W reward trains,
logs reward/accuracy, keeps the bandit in bandit.json (and in each
checkpoint), resumes, and the reward maps scores back to the right
completions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

PPO_ARGS = ["--data", "synthetic:8", "--num-generations", "4", "--batch-size", "8", "--max-new-tokens", "40",
            "--lr", "1e-4", "--save-steps", "2", "--lora-r", "8"]


def test_regime_w_reward_scores_each_group_and_keeps_input_order() -> None:
    """Completions of two questions arrive interleaved; each gets the reward
    score_groups gives it inside its own group."""
    from looper_cli.ppo import RegimeWReward
    from looper_cli.reward import RewardWeights
    from looper_cli.scoring import load_bandit, score_groups

    a = ["2+3 = <<2+3=5>>5\n#### 5", "2*3 = <<2*3=6>>6\n#### 6", "#### 5"]
    b = ["10-4 = <<10-4=6>>6\n#### 6", "#### 7", "10-4 = 6\n#### 6"]
    order = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    texts = {"a": a, "b": b}
    completions = [texts[q][i] for q, i in order]
    ids = [[1] * (5 + len(c) // 4) for c in completions]
    gold = {"a": 5.0, "b": 6.0}
    questions = {"a": "Add 2 and 3.", "b": "Take 4 from 10."}
    weights = RewardWeights(1.0, 0.5, 0.1)
    got = RegimeWReward(load_bandit(None, seed=3), weights)(
        prompts=["p"] * 6, completions=completions, completion_ids=ids, question_id=[q for q, _ in order],
        gold=[gold[q] for q, _ in order], question=[questions[q] for q, _ in order])

    tokens = {q: [len(ids[k]) for k, (qq, _) in enumerate(order) if qq == q] for q in "ab"}
    expected = score_groups([a, b], [tokens["a"], tokens["b"]], load_bandit(None, seed=3),
                            golds=[5.0, 6.0], questions=[questions["a"], questions["b"]], weights=weights)
    flat = {("a", i): expected.reward[i] for i in range(3)} | {("b", i): expected.reward[3 + i] for i in range(3)}
    assert np.allclose(got, [flat[key] for key in order])
    assert got[0] > got[2]  # the correct answer to "a" beats the wrong one


def test_pinned_coherence_arm_rewards_that_arm_and_the_bandit_still_learns() -> None:
    """--coherence-arm M1: s_wm is M1's score (s_cf) in every group, whatever
    the bandit would pick, and the bandit keeps learning from gold."""
    from looper_cli.reward import RewardWeights
    from looper_cli.scoring import load_bandit, score_groups

    groups = [["2+3 = <<2+3=5>>5\n#### 5", "2*3 = <<2*3=6>>6\n#### 6", "#### 5", "#### 6"]] * 3
    bandit = load_bandit(None, seed=1)
    scored = score_groups(groups, [[10, 10, 3, 3]] * 3, bandit, golds=[5.0] * 3, questions=["Add 2 and 3."] * 3,
                          weights=RewardWeights(1.0, 0.5, 0.0), arm="M1")
    assert scored.arm == ["M1"] * 12
    assert np.allclose(scored.s_wm, scored.s_cf)
    assert np.allclose(scored.reward, scored.correct + 0.5 * scored.s_cf)
    assert bandit.n_updates == 3 and scored.informative_groups == 3


def test_shaping_on_correct_pays_wrong_answers_nothing() -> None:
    """--shaping correct: the coherence and length terms count for correct
    answers only, so a wrong answer's reward is 0 however short or coherent;
    the spec's reward ("all") pays it for both."""
    from looper_cli.reward import RewardWeights, length_penalties, rewards

    correct, s_wm = [1, 1, 0, 0], [0.9, 0.4, 1.0, 0.2]
    tokens, offsets = [10, 30, 4, 40], [0, 4]
    spec = rewards(correct, s_wm, tokens, offsets, RewardWeights(1.0, 0.5, 0.1))
    gated = rewards(correct, s_wm, tokens, offsets, RewardWeights(1.0, 0.5, 0.1, shaping="correct"))
    penalty = length_penalties(tokens, offsets)
    assert np.allclose(spec, np.array(correct) + 0.5 * np.array(s_wm) - 0.1 * penalty)
    assert np.allclose(gated[2:], 0.0) and spec[2] > 0.4  # the short, coherent wrong answer
    assert np.allclose(gated[:2], spec[:2])


def test_ppo_grpo_trains_logs_reward_and_saves_bandit(warm_tiny_model: Path, tmp_path: Path, cli) -> None:
    out, config = tmp_path / "ppo", tmp_path / "run.toml"
    config.write_text('[ppo]\nlogging_steps = 1\nattn_implementation = "eager"\n')
    result = cli("ppo", "--sft", warm_tiny_model, *PPO_ARGS, "--max-steps", "2", "-o", out, "--config", config)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["algo"] == "grpo"
    assert summary["mean_reward"] is not None and 0.0 <= summary["accuracy"] <= 1.0
    for name in ("adapter_config.json", "adapter_model.safetensors", "bandit.json", "config.toml",
                 "checkpoint-2/bandit.json"):
        assert (out / name).is_file(), name
    assert not (out / "ref").exists()
    assert 'attn_implementation = "eager"' in (out / "config.toml").read_text()
    logs = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"][0]
    assert "rewards/regime_w/mean" in logs and "s_wm" in logs and logs["generation/tokens_per_s"] > 0
    assert summary["engine"] == "hf"  # auto on CPU
    assert 0 < summary["generated_tokens"] <= 2 * 8 * 40  # steps x completions x --max-new-tokens
    assert summary["generation_seconds"] > 0 and summary["training_seconds"] > 0
    assert abs(summary["generation_seconds"] + summary["training_seconds"] - summary["seconds"]) < 0.01
    assert "generation (s)" in result.stdout and "training (s)" in result.stdout

    from regime_w_core import Bandit

    Bandit.from_json((out / "bandit.json").read_text())  # a state the core reads back

    from looper_cli.training import read_training_log

    rows = read_training_log(out / "log.jsonl")  # what `looper report` draws
    assert [r["step"] for r in rows] == [1, 2]
    assert all({"reward", "accuracy", "completions/mean_length", "loss"} <= set(r) for r in rows)
    report = cli("report", out)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (out / "report" / "curves-ppo.png").stat().st_size > 0
    assert "mean completion length" in (out / "report" / "report.md").read_text()


def test_ppo_rloo_resumes_from_checkpoint_with_its_bandit(warm_tiny_model: Path, tmp_path: Path) -> None:
    from looper_cli.ppo import PPOStageConfig, run_ppo

    out = tmp_path / "rloo"
    options = dict(sft=warm_tiny_model, data="synthetic:8", algo="rloo", num_generations=4, batch_size=8,
                   max_new_tokens=32, lr=1e-4, save_steps=1, lora_r=8, shaping="correct", output=out)
    run_ppo(PPOStageConfig(max_steps=2, **options))  # type: ignore[arg-type]
    assert 'shaping = "correct"' in (out / "config.toml").read_text()  # the experiment's reward, on record
    assert (out / "checkpoint-1" / "bandit.json").is_file()  # saved with the checkpoint
    shutil.rmtree(out / "checkpoint-2")  # as if killed after checkpoint-1
    (out / "summary.json").unlink()
    summary = run_ppo(PPOStageConfig(max_steps=2, resume=True, **options))  # type: ignore[arg-type]
    assert Path(summary["resumed_from"]).name == "checkpoint-1" and summary["steps"] == 2
    assert summary["engine"] == "hf" and summary["generated_tokens"] > 0  # RLOO samples through the engine too
    from looper_cli.training import read_training_log

    logged = (out / "log.jsonl").read_text().splitlines()  # step 2 by the killed run and by the resumed one
    assert len(logged) == 2 and [r["step"] for r in read_training_log(out / "log.jsonl")] == [2]


def test_ppo_with_compiled_layers_samples_with_the_fast_engine_and_trains_like_eager(warm_tiny_model: Path,
                                                                                     tmp_path: Path) -> None:
    """--compile in ppo: the training step's decoder layers are compiled, and sampling goes to the
    fast engine even where auto would pick transformers (here, the CPU): the engine reads the
    weights and never calls the compiled layers. The first step samples the same completions and
    takes the same gradient as without compiling (its loss is ~0 on-policy: the gradient is the
    check). No LoRA dropout: compiled code draws other dropout masks."""
    from looper_cli.ppo import PPOStageConfig, run_ppo
    from looper_cli.training import read_training_log

    options = dict(sft=warm_tiny_model, data="synthetic:8", num_generations=4, batch_size=8, max_new_tokens=24,
                   lr=1e-4, lora_r=8, lora_dropout=0.0, max_steps=1, logging_steps=1)
    eager = run_ppo(PPOStageConfig(output=tmp_path / "eager", engine="fast", **options))  # type: ignore[arg-type]
    compiled = run_ppo(PPOStageConfig(output=tmp_path / "compiled", compile_layers=True, **options))  # type: ignore[arg-type]
    assert eager["compiled_layers"] == 0 and compiled["compiled_layers"] == 2  # the tiny model's layers
    assert compiled["engine"] == "fast" and compiled["generated_tokens"] == eager["generated_tokens"]
    first = [read_training_log(tmp_path / name / "log.jsonl")[0] for name in ("eager", "compiled")]
    assert first[1]["reward"] == first[0]["reward"] and first[0]["grad_norm"] > 0
    assert first[1]["grad_norm"] == pytest.approx(first[0]["grad_norm"], rel=1e-4)


def test_ppo_steps_per_generation_samples_once_for_several_steps(warm_tiny_model: Path, tmp_path: Path) -> None:
    """--steps-per-generation 2: one generation phase samples both steps' completions (whole
    groups, one engine call), and the second step trains on them off-policy: TRL then takes the
    old log-probs from a forward at sampling time, so the second step's clipped ratio is live."""
    from looper_cli.ppo import PPOStageConfig, run_ppo
    from looper_cli.training import read_training_log

    options = dict(sft=warm_tiny_model, data="synthetic:8", num_generations=4, batch_size=8, max_new_tokens=24,
                   lr=1e-3, lora_r=8, max_steps=2, logging_steps=1)
    summary = run_ppo(PPOStageConfig(output=tmp_path / "spg", steps_per_generation=2, **options))  # type: ignore[arg-type]
    rows = read_training_log(tmp_path / "spg" / "log.jsonl")
    assert summary["steps"] == 2 and [r["step"] for r in rows] == [1, 2]
    assert 0 < summary["generated_tokens"] <= 2 * 8 * 24  # both steps' 16 completions, sampled once
    assert rows[0]["generation/tokens_per_s"] > 0 and "generation/tokens_per_s" not in rows[1]
    assert 'steps_per_generation = 2' in (tmp_path / "spg" / "config.toml").read_text()


@pytest.mark.parametrize("case", ["both-starts", "no-start", "split-groups", "memory-share", "group-over-max-seqs",
                                  "compile-with-hf", "steps-per-generation"])
def test_ppo_user_errors_are_one_line(case: str, tmp_path: Path, cli) -> None:
    start = tmp_path / "start"
    start.mkdir()
    args = {
        "both-starts": ["--sft", start, "--dpo", start],
        "no-start": [],
        "split-groups": ["--sft", start, "--num-generations", "3", "--batch-size", "8"],
        "memory-share": ["--sft", start, "--gpu-memory-utilization", "1.5"],
        "group-over-max-seqs": ["--sft", start, "--num-generations", "8", "--max-seqs", "4"],
        "compile-with-hf": ["--sft", start, "--compile", "--engine", "hf"],
        "steps-per-generation": ["--sft", start, "--steps-per-generation", "0"],
    }[case]
    result = cli("ppo", "--data", "synthetic:4", *args, "-o", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("looper: error:"), result.stderr
