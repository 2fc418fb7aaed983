"""Statistics for accuracies and paired comparisons of two eval runs.

Two runs are compared on the questions both answered (question ids are
stable across GSM8K and Platinum): an exact McNemar test (a binomial test on
the discordant pairs), its chi-square form with continuity correction, and a
seeded paired bootstrap CI of the accuracy difference. Single accuracies get
a Wilson score interval. No scipy: everything here is closed-form or numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from looper_cli.errors import UserError, require_at_least, require_dir
from looper_cli.jsonl import read_jsonl

SECTION = "compare"

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
EXAMPLES_NAME = "examples.jsonl"
# The per-example 0/1 fields an eval log holds, by the metric name users give.
METRIC_FIELDS = {
    "accuracy": "correct",
    "strict": "correct_strict",
    "flexible": "correct_flexible",
    "maj": "maj_correct",
    "vote": "vote_correct",
    "pass": "pass_at_k",
}


@dataclass
class CompareStageConfig:
    eval_a: Path | None = None  # the baseline
    eval_b: Path | None = None  # reported as B - A
    metric: str = "accuracy"  # accuracy, strict, flexible, maj, vote or pass
    bootstrap: int = 10000
    seed: int = 0
    output: Path | None = None  # also write the result as JSON here


def run_compare(cfg: CompareStageConfig) -> dict[str, Any]:
    """`looper compare`: compare, print, and write the JSON when asked."""
    from rich.console import Console

    from looper_cli.jsonl import atomic_write_json
    from looper_cli.locks import check_output_kind

    if cfg.eval_a is None or cfg.eval_b is None:
        raise UserError("compare needs two eval folders (A, the baseline, then B)")
    if cfg.output is not None:
        check_output_kind(cfg.output, folder=False)
    result = compare_eval_dirs(cfg.eval_a, cfg.eval_b, metric=cfg.metric, n_boot=cfg.bootstrap, seed=cfg.seed)
    if cfg.output is not None:
        atomic_write_json(cfg.output, result)  # one atomic write: two runs leave one whole file
    Console().print(render_comparison(result))
    return result


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval: well-behaved near 0 and 1, unlike the normal
    approximation. (0, 1) when there is no data."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding must not move it inside.
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: under H0 the b + c discordant pairs split
    Binomial(b + c, 1/2). Exact integer arithmetic, so no underflow at
    GSM8K sizes."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def mcnemar_chi2(b: int, c: int) -> tuple[float, float]:
    """(statistic, p) of McNemar's chi-square with continuity correction,
    1 degree of freedom: P(chi2_1 > x) = erfc(sqrt(x / 2))."""
    if b + c == 0:
        return (0.0, 1.0)
    stat = (max(0, abs(b - c) - 1) ** 2) / (b + c)
    return (stat, math.erfc(math.sqrt(stat / 2)))


def paired_bootstrap_ci(correct_a: Sequence[int], correct_b: Sequence[int], n_boot: int = 10000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of accuracy(B) - accuracy(A), resampling questions."""
    a = np.asarray(correct_a, dtype=np.int64)
    b = np.asarray(correct_b, dtype=np.int64)
    diff = b - a
    return bootstrap_difference_ci(int(np.sum(diff == 1)), int(np.sum(diff == -1)), a.shape[0],
                                   n_boot, seed, level)


def bootstrap_difference_ci(only_b: int, only_a: int, n: int, n_boot: int = 10000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """The paired bootstrap from the discordant counts alone.

    Per question the paired difference is +1 (only B right), -1 (only A
    right) or 0, so a resample of n questions is fully described by how many
    of each it drew: a multinomial draw. That is exactly the paired
    bootstrap, at O(n_boot) cost instead of O(n_boot * n).
    """
    if n == 0:
        return (0.0, 0.0)
    probs = [only_b / n, only_a / n, (n - only_a - only_b) / n]
    draws = np.random.default_rng(seed).multinomial(n, probs, size=n_boot)
    boot = (draws[:, 0] - draws[:, 1]) / n
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return (float(lo), float(hi))


@dataclass
class PairedComparison:
    name_a: str
    name_b: str
    metric: str
    n: int  # questions both runs answered
    correct_a: int
    correct_b: int
    only_a: int  # b of McNemar's table: A right, B wrong
    only_b: int  # c: B right, A wrong
    seed: int
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        n = self.n
        acc_a = self.correct_a / n if n else 0.0
        acc_b = self.correct_b / n if n else 0.0
        chi2, chi2_p = mcnemar_chi2(self.only_a, self.only_b)
        return {
            "a": self.name_a, "b": self.name_b, "metric": self.metric, "n": n,
            "accuracy_a": acc_a, "accuracy_a_ci": list(wilson_interval(self.correct_a, n)),
            "accuracy_b": acc_b, "accuracy_b_ci": list(wilson_interval(self.correct_b, n)),
            "difference": acc_b - acc_a,
            "difference_ci": list(self._bootstrap()),
            "only_a_correct": self.only_a, "only_b_correct": self.only_b,
            "mcnemar_exact_p": mcnemar_exact_p(self.only_a, self.only_b),
            "mcnemar_chi2": chi2, "mcnemar_chi2_p": chi2_p,
            "bootstrap": {"samples": self.n_boot, "seed": self.seed},
        }

    def _bootstrap(self) -> tuple[float, float]:
        return bootstrap_difference_ci(self.only_b, self.only_a, self.n, self.n_boot, self.seed)


def pair_outcomes(name_a: str, outcomes_a: dict[str, int], name_b: str, outcomes_b: dict[str, int],
                  metric: str = "accuracy", n_boot: int = 10000, seed: int = 0) -> PairedComparison:
    """The 2x2 table of two runs on the questions both answered."""
    shared = sorted(set(outcomes_a) & set(outcomes_b))
    a = [outcomes_a[q] for q in shared]
    b = [outcomes_b[q] for q in shared]
    return PairedComparison(
        name_a, name_b, metric, len(shared), sum(a), sum(b),
        only_a=sum(1 for x, y in zip(a, b) if x and not y),
        only_b=sum(1 for x, y in zip(a, b) if y and not x),
        seed=seed, n_boot=n_boot,
    )


def load_outcomes(eval_dir: str | Path, metric: str = "accuracy") -> tuple[dict[str, int], int]:
    """question_id -> 0/1 under `metric` from an eval folder's examples.jsonl,
    plus the number of damaged lines skipped (they are never trusted)."""
    folder = require_dir(eval_dir, "eval folder")
    path = folder / EXAMPLES_NAME
    if not path.is_file():
        raise UserError(f"no {EXAMPLES_NAME} in eval folder {folder}")
    if metric not in METRIC_FIELDS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_FIELDS)}")
    field = METRIC_FIELDS[metric]
    result = read_jsonl(path, required=("question_id",))
    outcomes: dict[str, int] = {}
    for row in result.rows:
        if row.get(field) is not None:
            outcomes.setdefault(str(row["question_id"]), int(bool(row[field])))
    if not outcomes:
        raise UserError(f"{path} has no '{field}' outcomes to compare (metric {metric})")
    return outcomes, len(result.bad_lines)


def compare_eval_dirs(dir_a: str | Path, dir_b: str | Path, metric: str = "accuracy",
                      n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Compare two eval folders on their shared questions (B minus A)."""
    require_at_least("--bootstrap", n_boot, 1)
    outcomes_a, bad_a = load_outcomes(dir_a, metric)
    outcomes_b, bad_b = load_outcomes(dir_b, metric)
    comparison = pair_outcomes(_run_name(dir_a), outcomes_a, _run_name(dir_b), outcomes_b,
                               metric, n_boot, seed)
    if comparison.n == 0:
        raise UserError(f"{dir_a} and {dir_b} share no questions; nothing to compare")
    result = comparison.to_dict()
    result.update(path_a=str(dir_a), path_b=str(dir_b), n_a=len(outcomes_a), n_b=len(outcomes_b),
                  damaged_lines_skipped=bad_a + bad_b)
    return result


def _run_name(path: str | Path) -> str:
    return Path(path).resolve().name


def render_comparison(result: dict[str, Any]) -> Any:
    """A Rich table of one comparison."""
    from rich.table import Table

    table = Table(title=f"{result['b']} vs {result['a']} ({result['metric']}, {result['n']} shared questions)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row(f"A: {result['a']}", _pct_ci(result["accuracy_a"], result["accuracy_a_ci"]))
    table.add_row(f"B: {result['b']}", _pct_ci(result["accuracy_b"], result["accuracy_b_ci"]))
    table.add_row("B - A (paired bootstrap 95% CI)", _pct_ci(result["difference"], result["difference_ci"], sign=True))
    table.add_row("only A right / only B right", f"{result['only_a_correct']} / {result['only_b_correct']}")
    table.add_row("McNemar exact p", f"{result['mcnemar_exact_p']:.4g}")
    table.add_row("McNemar chi2 (cc), p", f"{result['mcnemar_chi2']:.3f}, {result['mcnemar_chi2_p']:.4g}")
    if result.get("damaged_lines_skipped"):
        table.add_row("damaged log lines skipped", str(result["damaged_lines_skipped"]))
    return table


def _pct_ci(value: float, ci: Sequence[float], sign: bool = False) -> str:
    fmt = "{:+.1f}" if sign else "{:.1f}"
    return f"{fmt.format(100 * value)}% [{fmt.format(100 * ci[0])}, {fmt.format(100 * ci[1])}]"
