"""Rollouts on the tiny model: resume after SIGKILL, CPU worker processes,
merge = union of shards, `looper score`, and user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from looper_cli.errors import UserError
from looper_cli.jsonl import read_jsonl
from looper_cli.rollout import RolloutStageConfig, run_rollout, shards_dir, split_even

from conftest import ROOT

K = 3
SCORE_FIELDS = ("answer", "correct", "s_end", "s_path", "s_cf", "s_wm", "arm", "reward")


def rollout_args(model: Path, out: Path, limit: int, *extra: str) -> list[str]:
    return ["rollout", "--base-model", str(model), "--data", "synthetic", "--limit", str(limit),
            "--samples", str(K), "--max-new-tokens", "24", "--batch-size", str(2 * K),
            "--output", str(out), *extra]


def group_key(rows: list[dict]) -> set[tuple]:
    return {(r["question_id"], r["sample_index"], r["text"]) for r in rows}


def assert_every_question_k_times(rows: list[dict], questions: int) -> None:
    counts = Counter(r["question_id"] for r in rows)
    assert len(counts) == questions and set(counts.values()) == {K}
    for qid in counts:
        assert sorted(r["sample_index"] for r in rows if r["question_id"] == qid) == list(range(K))


def test_rollout_resumes_after_sigkill_without_loss_or_duplicates(tiny_model: Path, tmp_path: Path, cli):
    out = tmp_path / "run" / "rollouts.jsonl"
    shard = shards_dir(out) / "shard-0.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "looper_cli", *rollout_args(tiny_model, out, 16)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and len(read_jsonl(shard).rows) >= 2 * K:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the rollout finished before it could be killed; give it more work"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_jsonl(shard).rows
    assert 2 * K <= len(before) < 16 * K and not out.exists()
    with shard.open("a") as fh:  # what a kill inside a group leaves: its first rows and a cut line
        fh.write(json.dumps({**before[0], "question_id": "qpartial", "sample_index": 0}) + "\n")
        fh.write('{"question_id": "qcut", "sample_ind')

    result = cli(*rollout_args(tiny_model, out, 16))
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out).rows
    assert_every_question_k_times(rows, 16)
    complete_before = [r for r in before if Counter(x["question_id"] for x in before)[r["question_id"]] == K]
    assert group_key(complete_before) <= group_key(rows)  # nothing generated before the kill is lost
    assert all(all(f in r for f in SCORE_FIELDS) for r in rows)
    assert all(0.0 <= r["s_wm"] <= 1.0 for r in rows)
    assert (out.parent / "bandit.json").is_file() and (out.parent / "rollouts.summary.json").is_file()
    assert (out.parent / "rollouts.config.toml").is_file()
    # a third run finds everything done and changes nothing
    again = cli(*rollout_args(tiny_model, out, 16))
    assert again.returncode == 0, again.stderr
    assert read_jsonl(out).rows == rows


def test_two_cpu_workers_cover_the_same_questions_and_merge_is_the_union(tiny_model: Path, tmp_path: Path):
    common = dict(base_model=str(tiny_model), data="synthetic", limit=8, samples=K, max_new_tokens=12,
                  batch_size=2 * K)
    one = tmp_path / "one" / "rollouts.jsonl"
    two = tmp_path / "two" / "rollouts.jsonl"
    run_rollout(RolloutStageConfig(**common, output=one))
    summary = run_rollout(RolloutStageConfig(**common, workers=2, output=two))
    assert summary["questions"] == 8 and summary["solutions"] == 8 * K
    shard_files = sorted(shards_dir(two).glob("shard-*.jsonl"))
    assert [len(read_jsonl(f).rows) for f in shard_files] == [4 * K, 4 * K]  # an even split
    shard_rows = [r for f in shard_files for r in read_jsonl(f).rows]
    merged = read_jsonl(two).rows
    assert len(merged) == len(shard_rows) and group_key(merged) == group_key(shard_rows)
    assert_every_question_k_times(merged, 8)
    assert {r["question_id"] for r in merged} == {r["question_id"] for r in read_jsonl(one).rows}


def test_split_even_gives_every_worker_the_same_count_within_one():
    for total in (0, 1, 7, 256, 1025):
        for n in (1, 2, 3, 4, 8):
            parts = split_even(list(range(total)), n)
            sizes = [len(p) for p in parts]
            assert len(parts) == n and max(sizes) - min(sizes) <= 1
            assert sorted(x for p in parts for x in p) == list(range(total))


def test_resume_refuses_rollouts_made_with_other_settings(tiny_model: Path, tmp_path: Path):
    out = tmp_path / "rollouts.jsonl"
    shards_dir(out).mkdir(parents=True)
    (shards_dir(out) / "generation.json").write_text(json.dumps({"samples": "8"}))
    (shards_dir(out) / "shard-0.jsonl").write_text(json.dumps({"question_id": "q1", "sample_index": 0}) + "\n")
    with pytest.raises(UserError, match="other settings"):  # rows made otherwise are never mixed in
        run_rollout(RolloutStageConfig(base_model=str(tiny_model), data="synthetic", limit=2, samples=K,
                                       output=out))


def test_score_command_rescores_a_file_and_keeps_the_bandit(cli, tmp_path: Path):
    rows = []
    for q, (question, gold) in enumerate([("Ann has 3 bags of 4 apples. How many apples?", 12.0),
                                          ("Bo reads 5 pages a day for 6 days. How many pages?", 30.0)]):
        texts = [f"3*4 = <<3*4=12>>12\n#### {gold:g}", f"#### {gold + 1:g}", "no idea", f"So {gold:g}."]
        rows += [{"question_id": f"q{q}", "question": question, "gold": gold, "sample_index": k,
                  "text": t, "tokens": len(t.split())} for k, t in enumerate(texts)]
    src = tmp_path / "rollouts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("score", str(src), "--output", str(tmp_path / "scored.jsonl"), "--beta", "0.0")
    assert result.returncode == 0, result.stderr
    scored = read_jsonl(tmp_path / "scored.jsonl").rows
    assert [(r["question_id"], r["sample_index"]) for r in scored] == [(r["question_id"], r["sample_index"])
                                                                      for r in rows]
    assert all(all(f in r for f in SCORE_FIELDS) for r in scored)
    assert [r["correct"] for r in scored[:2]] == [True, False] and scored[0]["answer"] == 12.0
    assert scored[0]["reward"] >= 0.9 and scored[1]["reward"] <= 0.0  # beta 0: correctness minus length
    assert (tmp_path / "bandit.json").is_file()
    assert read_jsonl(src).rows == rows  # the input is untouched when --output is given


def test_user_mistakes_are_one_line_exit_2(cli, tmp_path: Path, tiny_model: Path):
    out = tmp_path / "o.jsonl"
    for bad in [dict(base_model=""), dict(base_model=str(tmp_path / "nope")),
                dict(base_model=str(tiny_model), gpus=4), dict(base_model=str(tiny_model), workers=2, gpus=2),
                dict(base_model=str(tiny_model), data=str(tmp_path / "missing.jsonl")),
                dict(base_model=str(tiny_model), output=tmp_path / "o.txt")]:
        with pytest.raises(UserError):
            run_rollout(RolloutStageConfig(**{"data": "synthetic", "output": out, **bad}))
    for args in [("rollout", "--data", "synthetic", "--output", str(out)), ("score", str(tmp_path / "x.jsonl"))]:
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("looper: error:") and result.stderr.count("\n") == 1, result.stderr
