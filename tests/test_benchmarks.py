"""The GPU benchmarks run on CPU too (a smoke run): a benchmark that broke
since its last GPU session costs device time to find out (issue 15's PPO
benchmark called a helper whose signature had changed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_gpu_ppo_benchmark_smoke_runs_on_cpu(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_ppo.py"), "--cases", "small",
                           "--device", "cpu", "--paths", "fast,fast@2", "--steps", "1", "--max-new-tokens", "8",
                           "--tokenizer", str(tiny_model), "--workdir", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "gpu_ppo.json").read_text())
    assert [r["path"] for r in rows] == ["fast", "fast@2"] and not any("error" in r for r in rows), rows
    assert rows[0]["steps"] == 1 and rows[0]["useful_tokens_per_step"] > 0
    assert rows[0]["engine_decode_steps"] > 0 and rows[0]["engine_decode_seconds"] > 0  # the phase split
    # two steps a generation: the timed window is rounded up to one whole phase (steps 3-4)
    assert rows[1]["steps"] == 2 and rows[1]["steps_per_generation"] == 2 and rows[1]["useful_tokens_per_step"] > 0


def _rollout_rows(gold_b: float | None) -> list[dict]:
    """Question a: one right answer among three that agree on a wrong one;
    question b: every answer right."""
    right, wrong = "2+3 = <<2+3=5>>5\n#### 5", "2+4 = <<2+4=6>>6\n#### 6"
    texts = {"a": [wrong, wrong, wrong, right], "b": ["3+4 = <<3+4=7>>7\n#### 7"] * 4}
    golds = {"a": 5.0, "b": gold_b}
    return [{"question_id": q, "sample_index": i, "question": "Add the numbers.", "text": t, "tokens": 9,
             "gold": golds[q]} for q in ("a", "b") for i, t in enumerate(texts[q])]


def _vote_from_rollouts(rows: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vote_from_rollouts.py"), str(path),
                           "--k", "4", "--json", str(tmp_path / "votes.json")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_vote_from_rollouts_reports_maj_vote_and_pass_at_k(tmp_path: Path) -> None:
    proc = _vote_from_rollouts(_rollout_rows(7.0), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figure = json.loads((tmp_path / "votes.json").read_text())[0]
    assert figure["k"] == 4 and figure["questions"] == 2
    assert figure["maj"] == 0.5 and figure["pass"] == 1.0  # a's majority is wrong, but one sample is right
    assert figure["maj"] <= figure["pass"] and figure["vote"] <= figure["pass"]


def test_vote_from_rollouts_refuses_an_unknown_gold(tmp_path: Path) -> None:
    proc = _vote_from_rollouts(_rollout_rows(None), tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "without a gold answer" in proc.stderr and not (tmp_path / "votes.json").exists()
