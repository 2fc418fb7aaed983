"""Comparison statistics against values computed by hand, and `looper compare`
on hand-written eval logs (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from looper_cli.compare import (bootstrap_difference_ci, compare_eval_dirs, mcnemar_chi2, mcnemar_exact_p,
                                paired_bootstrap_ci, wilson_interval)
from looper_cli.errors import UserError


def test_mcnemar_exact_small_table():
    # b=1, c=6: two-sided p = 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    assert mcnemar_exact_p(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact_p(6, 1) == pytest.approx(0.125)
    # b=0, c=5: 2 / 32
    assert mcnemar_exact_p(0, 5) == pytest.approx(0.0625)
    # balanced table: p capped at 1; no discordant pairs: 1
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0


def test_mcnemar_exact_large_counts_do_not_underflow():
    p = mcnemar_exact_p(600, 700)  # 2^1300 would underflow a float
    assert 0 < p < 0.01 and math.isfinite(p)


def test_mcnemar_chi2_with_continuity_correction():
    stat, p = mcnemar_chi2(1, 6)
    assert stat == pytest.approx((abs(1 - 6) - 1) ** 2 / 7)  # 16/7
    assert p == pytest.approx(0.130570, abs=1e-5)  # chi2(1) survival at 2.2857
    stat, p = mcnemar_chi2(10, 30)  # (20-1)^2/40 = 9.025 -> p = 0.002663
    assert stat == pytest.approx(9.025)
    assert p == pytest.approx(0.0026631, abs=1e-6)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in range(1, 200):  # the observed rate is always inside, even after rounding
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


def test_paired_bootstrap_contains_true_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    n = 400
    a = (rng.random(n) < 0.55).astype(int)
    b = np.where(rng.random(n) < 0.8, a, 1 - a)  # B agrees with A 80% of the time
    b[:40] = 1  # and gets some more right
    true_diff = b.mean() - a.mean()
    lo, hi = paired_bootstrap_ci(a, b, n_boot=5000, seed=3)
    assert lo < true_diff < hi
    assert hi - lo < 0.15
    assert paired_bootstrap_ci(a, b, n_boot=5000, seed=3) == (lo, hi)
    # Identical runs: a zero-width interval at 0.
    assert paired_bootstrap_ci(a, a, n_boot=1000) == (0.0, 0.0)


def test_bootstrap_from_counts_matches_normal_approximation():
    # 60 only-B, 20 only-A of 1000: diff 0.04, sd = sqrt((p+ + p- - d^2) / n)
    lo, hi = bootstrap_difference_ci(60, 20, 1000, n_boot=20000, seed=0)
    sd = math.sqrt((0.06 + 0.02 - 0.04 ** 2) / 1000)
    assert lo == pytest.approx(0.04 - 1.96 * sd, abs=0.003)
    assert hi == pytest.approx(0.04 + 1.96 * sd, abs=0.003)


def _write_eval(folder: Path, outcomes: dict[str, int], extra_line: str | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"question_id": q, "correct": bool(c), "correct_strict": bool(c),
                         "correct_flexible": True}) for q, c in outcomes.items()]
    if extra_line is not None:
        lines.insert(1, extra_line)
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_compare_eval_dirs_intersects_questions(tmp_path):
    # A: q0..q9 with 4 right; B: q2..q11 (q0, q1 absent) -> 8 shared questions.
    a = _write_eval(tmp_path / "sft-gsm8k", {f"q{i}": int(i < 4) for i in range(10)},
                    extra_line='{"question_id": "q99", "corr')  # a damaged line is skipped, counted
    b = _write_eval(tmp_path / "dpo-gsm8k", {f"q{i}": int(i < 9) for i in range(2, 12)})
    result = compare_eval_dirs(a, b, n_boot=2000, seed=0)
    assert result["n"] == 8 and result["n_a"] == 10 and result["n_b"] == 10
    # shared q2..q9: A right on q2,q3 (2/8); B right on q2..q8 (7/8)
    assert result["accuracy_a"] == pytest.approx(2 / 8)
    assert result["accuracy_b"] == pytest.approx(7 / 8)
    assert (result["only_a_correct"], result["only_b_correct"]) == (0, 5)
    assert result["mcnemar_exact_p"] == pytest.approx(0.0625)
    assert result["difference"] == pytest.approx(5 / 8)
    lo, hi = result["difference_ci"]
    assert lo <= 5 / 8 <= hi
    assert result["damaged_lines_skipped"] == 1
    assert compare_eval_dirs(a, b, metric="flexible")["difference"] == 0.0


def test_compare_user_errors(tmp_path):
    a = _write_eval(tmp_path / "a", {"q1": 1})
    b = _write_eval(tmp_path / "b", {"q2": 1})
    with pytest.raises(UserError, match="share no questions"):
        compare_eval_dirs(a, b)
    with pytest.raises(UserError, match="not found"):
        compare_eval_dirs(a, tmp_path / "missing")
    with pytest.raises(UserError, match="unknown metric"):
        compare_eval_dirs(a, a, metric="bogus")


def test_compare_cli(tmp_path, cli):
    a = _write_eval(tmp_path / "sft-gsm8k", {f"q{i}": int(i % 2 == 0) for i in range(20)})
    b = _write_eval(tmp_path / "dpo-gsm8k", {f"q{i}": int(i % 3 != 0) for i in range(20)})
    out = tmp_path / "cmp.json"
    proc = cli("compare", a, b, "--output", out, "--bootstrap", "1000")
    assert proc.returncode == 0, proc.stderr
    assert "McNemar exact p" in proc.stdout
    saved = json.loads(out.read_text())
    assert saved["n"] == 20 and saved["a"] == "sft-gsm8k" and saved["b"] == "dpo-gsm8k"
    bad = cli("compare", a, tmp_path / "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0
