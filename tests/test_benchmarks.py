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
                           "--device", "cpu", "--paths", "fast", "--steps", "1", "--max-new-tokens", "8",
                           "--tokenizer", str(tiny_model), "--workdir", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "gpu_ppo.json").read_text())
    assert [r["path"] for r in rows] == ["fast"] and "error" not in rows[0], rows
    assert rows[0]["steps"] == 1 and rows[0]["useful_tokens_per_step"] > 0
