"""`looper report RUN_DIR`: PNG plots and a short report.md of a run.

- accuracy.png: accuracy per stage with Wilson 95% CIs (run/eval/*/summary.json);
- scores.png: reward and s_wm distributions, correct vs incorrect (rollouts.jsonl);
- arms.png: the bandit's Beta posterior mean +- sd per arm (bandit.json);
- curves-<stage>.png: a training stage's logged numbers against the step
  (run/<stage>/log.jsonl, or the folder's own log.jsonl): loss, and for ppo
  the mean reward, the sample accuracy and the mean completion length.

Each part is drawn from what the run has; a missing part is noted in the
Markdown, and a folder with none of them is a user error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from looper_cli.errors import UserError, require_dir

REPORT_DIR_NAME = "report"
ROLLOUTS_NAME = "rollouts.jsonl"
STAGE_ORDER = ("base", "sft", "merged", "dpo", "ppo", "grpo")
# log.jsonl keys drawn against the step, with their axis labels, where a stage logs them.
CURVES = (("loss", "loss"), ("reward", "mean reward"), ("accuracy", "sample accuracy"),
          ("completions/mean_length", "mean completion length (tokens)"), ("s_wm", "mean s_wm"),
          ("rewards/margins", "reward margin"))
# Side by side when a run folder holds several RL runs (the arms of a reward ablation).
ARM_CURVES = (("reward", "mean reward"), ("accuracy", "sample accuracy"),
              ("completions/mean_length", "mean completion length (tokens)"), ("s_wm", "mean s_wm"))


def make_report(run_dir: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """Write the plots and report.md; returns {"output", "files"}."""
    from looper_cli.locks import claim_output

    run = require_dir(run_dir, "run folder")
    out = Path(output) if output is not None else run / REPORT_DIR_NAME
    evals = eval_summaries(run)
    rollouts = rollout_scores(run / ROLLOUTS_NAME)
    arms = arm_posteriors(run)
    logs = training_logs(run)
    if not evals and not rollouts["n"] and arms is None and not logs:
        raise UserError(f"nothing to report in {run}: no eval/*/summary.json, {ROLLOUTS_NAME}, bandit.json "
                        "or <stage>/log.jsonl")
    with claim_output(out, "report", folder=True):
        out.mkdir(parents=True, exist_ok=True)
        return _write_report(run, out, evals, rollouts, arms, logs)


def _write_report(run: Path, out: Path, evals: list[dict[str, Any]], rollouts: dict[str, Any],
                  arms: dict[str, Any] | None, logs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from looper_cli.jsonl import atomic_write_text

    files: list[str] = []
    sections = [f"# Report: {run.resolve().name}\n"]
    sections.append(_accuracy_section(evals, out, files))
    sections.append(_comparison_section(evals))
    sections.append(_rollout_section(rollouts, out, files))
    sections.append(_arm_section(arms, out, files))
    sections.append(_arms_curves_section({k: v for k, v in logs.items() if any("reward" in r for r in v)},
                                         out, files))
    sections += [_curves_section(stage, rows, out, files) for stage, rows in logs.items()]
    report_md = out / "report.md"
    atomic_write_text(report_md, "\n".join(s for s in sections if s))
    files.append(str(report_md))
    return {"output": str(out), "files": files}


# ---------------------------------------------------------------- data


def eval_summaries(run: Path) -> list[dict[str, Any]]:
    """Summaries of run/eval/<stage>-<dataset>/, in pipeline stage order."""
    import json

    found = []
    for path in sorted((run / "eval").glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # written atomically, so only a foreign file lands here
        if isinstance(summary, dict) and "accuracy" in summary:
            found.append({**summary, "name": path.parent.name, "folder": str(path.parent)})
    return sorted(found, key=_stage_key)


def _stage_key(summary: dict[str, Any]) -> tuple[str, int, str]:
    stage, _, dataset = summary["name"].partition("-")
    rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
    return (dataset, rank, stage)


def training_logs(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Each training stage's log rows by step: run/<stage>/log.jsonl for
    every stage folder (sft, dpo, ppo, ppo-<arm>, ...), or the folder's own
    log.jsonl when it is a stage's output folder."""
    from looper_cli.training import LOG_NAME, read_training_log

    found = {child.name: child / LOG_NAME for child in sorted(run.iterdir()) if child.is_dir()}
    found[run.resolve().name] = run / LOG_NAME
    return {stage: rows for stage, path in found.items() if path.is_file() and (rows := read_training_log(path))}


def rollout_scores(path: Path) -> dict[str, Any]:
    """reward and s_wm of scored rollouts split by correctness."""
    from looper_cli.jsonl import read_jsonl

    result = read_jsonl(path, required=("correct", "reward", "s_wm"))
    split: dict[str, dict[str, list[float]]] = {
        "correct": {"reward": [], "s_wm": []}, "incorrect": {"reward": [], "s_wm": []}}
    for row in result.rows:
        if row["correct"] is None:
            continue  # unknown gold: neither side
        side = split["correct" if row["correct"] else "incorrect"]
        side["reward"].append(float(row["reward"]))
        side["s_wm"].append(float(row["s_wm"]))
    n = sum(len(s["reward"]) for s in split.values())
    return {"n": n, "bad_lines": len(result.bad_lines), **split}


def arm_posteriors(run: Path) -> dict[str, Any] | None:
    """Beta posterior mean and sd per arm from the run's bandit.json."""
    from looper_cli.scoring import BANDIT_STATE_NAME, load_bandit

    path = run / BANDIT_STATE_NAME
    if not path.is_file():
        return None
    import regime_w_core as rw

    bandit = load_bandit(path)
    alpha, beta = list(map(float, bandit.alpha)), list(map(float, bandit.beta))
    sd = [math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))) for a, b in zip(alpha, beta)]
    mean = list(map(float, bandit.posterior_mean))
    # Every arm whose posterior mean ties the highest: naming one of them "best" would be arbitrary.
    best = [arm for arm, m in zip(rw.ARMS, mean) if math.isclose(m, max(mean), rel_tol=1e-12)]
    return {"arms": list(rw.ARMS), "names": list(rw.ARM_NAMES), "mean": mean,
            "sd": sd, "alpha": alpha, "beta": beta, "updates": int(bandit.n_updates), "best": best}


# ---------------------------------------------------------------- sections


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("looper report needs matplotlib: pip install 'looper[report]'") from None
    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _accuracy_section(evals: list[dict[str, Any]], out: Path, files: list[str]) -> str:
    if not evals:
        return "## Accuracy\n\nNo eval summaries (eval/*/summary.json) in this run.\n"
    plt = _pyplot()
    fig = accuracy_figure(plt, evals)
    files.append(_save(fig, plt, out / "accuracy.png"))
    lines = ["## Accuracy\n", "![accuracy](accuracy.png)\n",
             "| eval | n | accuracy [95% CI] | strict | flexible | maj@K | vote@K |", "|---|---|---|---|---|---|---|"]
    for e in evals:
        lines.append(f"| {e['name']} | {e['n']} | {_pct_ci(e['accuracy'], e['accuracy_ci'])} | "
                     f"{_pct(e.get('accuracy_strict'))} | {_pct(e.get('accuracy_flexible'))} | "
                     f"{_pct(e.get('maj_at_k'))} | {_pct(e.get('vote_at_k'))} |")
    return "\n".join(lines) + "\n"


def accuracy_figure(plt: Any, evals: list[dict[str, Any]]) -> Any:
    """Accuracy per eval with its Wilson CI and the value above each bar."""
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(evals) + 2), 4))
    names = [e["name"] for e in evals]
    acc = [100 * e["accuracy"] for e in evals]
    errors = [[100 * max(0.0, e["accuracy"] - e["accuracy_ci"][0]) for e in evals],
              [100 * max(0.0, e["accuracy_ci"][1] - e["accuracy"]) for e in evals]]
    bars = ax.bar(names, acc, yerr=errors, capsize=4, color="tab:blue")
    _label_bars(ax, bars, [f"{a:.1f}%" for a in acc], top=max(a + e for a, e in zip(acc, errors[1])))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy per stage (Wilson 95% CI)")
    ax.tick_params(axis="x", rotation=30)
    return fig


def _comparison_section(evals: list[dict[str, Any]]) -> str:
    """Each stage against the one before it on the same dataset (paired):
    base -> sft -> dpo -> ppo, so every step of the pipeline has its error bar."""
    from looper_cli.compare import compare_eval_dirs

    rows = []
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for e in evals:
        by_dataset.setdefault(e["name"].partition("-")[2], []).append(e)
    for group in by_dataset.values():
        for earlier, later in zip(group, group[1:]):
            try:
                c = compare_eval_dirs(earlier["folder"], later["folder"])
            except UserError:
                continue  # no examples.jsonl or no shared questions: nothing paired to say
            rows.append(f"| {c['b']} vs {c['a']} | {c['n']} | {_pct_ci(c['difference'], c['difference_ci'])} | "
                        f"{c['mcnemar_exact_p']:.3g} |")
    if not rows:
        return ""
    return "\n".join(["## Paired comparisons\n", "| B vs A | shared | B - A [bootstrap 95% CI] | McNemar exact p |",
                      "|---|---|---|---|", *rows]) + "\n"


def _rollout_section(rollouts: dict[str, Any], out: Path, files: list[str]) -> str:
    if not rollouts["n"]:
        return f"## Rollouts\n\nNo scored rollouts ({ROLLOUTS_NAME}) in this run.\n"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("reward", "s_wm")):
        both = rollouts["correct"][key] + rollouts["incorrect"][key]
        bins = _shared_bins(both, fixed=(0.0, 1.0) if key == "s_wm" else None)
        for side, colour in (("correct", "tab:green"), ("incorrect", "tab:red")):
            values = rollouts[side][key]
            if values:  # densities: the two sides are comparable whatever their sizes
                ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour, label=f"{side} ({len(values)})")
        ax.set_title(f"{key} by correctness")
        ax.set_xlabel(key)
        ax.set_ylabel("density")
        ax.legend()
    files.append(_save(fig, plt, out / "scores.png"))
    lines = ["## Rollouts\n", "![scores](scores.png)\n", "| | solutions | mean reward | mean s_wm |", "|---|---|---|---|"]
    for side in ("correct", "incorrect"):
        part = rollouts[side]
        lines.append(f"| {side} | {len(part['reward'])} | {_mean(part['reward'])} | {_mean(part['s_wm'])} |")
    if rollouts["bad_lines"]:
        lines.append(f"\n{rollouts['bad_lines']} damaged line(s) in {ROLLOUTS_NAME} were skipped.")
    return "\n".join(lines) + "\n"


def _arm_section(arms: dict[str, Any] | None, out: Path, files: list[str]) -> str:
    if arms is None:
        return "## Regime W arms\n\nNo bandit.json in this run.\n"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [f"{a}\n" + n.replace(" ", "\n") for a, n in zip(arms["arms"], arms["names"])]
    bars = ax.bar(labels, arms["mean"], yerr=arms["sd"], capsize=4, color="tab:purple")
    _label_bars(ax, bars, [f"{m:.3f}" for m in arms["mean"]], top=1.0)
    ax.set_ylabel("posterior mean (Beta) +- sd")
    ax.set_title(f"Arm posteriors after {arms['updates']} informative groups")
    ax.tick_params(axis="x", labelsize=8)
    files.append(_save(fig, plt, out / "arms.png"))
    best = ", ".join(f"**{a}**" for a in arms["best"])
    best_line = f"Best arm: {best}." if len(arms["best"]) == 1 else f"Best arms (tied posterior means): {best}."
    lines = ["## Regime W arms\n", "![arms](arms.png)\n", best_line + "\n",
             "| arm | name | mean | sd | alpha | beta |", "|---|---|---|---|---|---|"]
    for i, arm in enumerate(arms["arms"]):
        lines.append(f"| {arm} | {arms['names'][i]} | {arms['mean'][i]:.3f} | {arms['sd'][i]:.3f} | "
                     f"{arms['alpha'][i]:.1f} | {arms['beta'][i]:.1f} |")
    return "\n".join(lines) + "\n"


def _curves_section(stage: str, rows: list[dict[str, Any]], out: Path, files: list[str]) -> str:
    """One panel per logged number of CURVES, against the step; the table
    gives each one's first and last value and its best."""
    drawn = [(key, label) for key, label in CURVES if any(key in r for r in rows)]
    if not drawn:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.2 * len(drawn), 3.6), squeeze=False)
    lines = [f"## Training: {stage}\n", f"![{stage}](curves-{stage}.png)\n",
             "| logged | first | last | lowest | highest | steps |", "|---|---|---|---|---|---|"]
    for ax, (key, label) in zip(axes[0], drawn):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        ax.set_xlabel("step")
        ax.set_title(label)
        values = [p[1] for p in points]
        lines.append(f"| {label} | {values[0]:.4g} | {values[-1]:.4g} | {min(values):.4g} | {max(values):.4g} "
                     f"| {points[0][0]}-{points[-1][0]} |")
    fig.suptitle(f"{stage}: logged every logging step")
    files.append(_save(fig, plt, out / f"curves-{stage}.png"))
    return "\n".join(lines) + "\n"


def _arms_curves_section(runs: dict[str, list[dict[str, Any]]], out: Path, files: list[str]) -> str:
    """Several RL runs on the same axes (one line each), so the arms of an
    ablation are compared step for step; nothing for fewer than two."""
    drawn = [(key, label) for key, label in ARM_CURVES
             if sum(any(key in r for r in rows) for rows in runs.values()) > 1]
    if len(runs) < 2 or not drawn:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.2 * len(drawn), 3.6), squeeze=False)
    lines = ["## RL runs side by side\n", "![RL runs](curves-rl-runs.png)\n",
             "| run | steps | " + " | ".join(f"{label}: first → last" for _, label in drawn) + " |",
             "|---|---|" + "---|" * len(drawn)]
    for name, rows in runs.items():
        cells = []
        for ax, (key, label) in zip(axes[0], drawn):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
            cells.append(f"{points[0][1]:.4g} → {points[-1][1]:.4g}" if points else "")
        lines.append(f"| {name} | {rows[-1]['step']} | " + " | ".join(cells) + " |")
    for ax, (_, label) in zip(axes[0], drawn):
        ax.set_xlabel("step")
        ax.set_title(label)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("RL runs, logged every logging step")
    files.append(_save(fig, plt, out / "curves-rl-runs.png"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- helpers


def _label_bars(ax: Any, bars: Any, labels: list[str], top: float) -> None:
    """The value above each bar (a 0% bar is otherwise invisible), with head
    room so the labels stay inside the plot."""
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_ylim(0, max(top, 1e-9) * 1.15)


def _save(fig: Any, plt: Any, path: Path) -> str:
    """PNG written to a temporary name then renamed: a kill never leaves half a plot."""
    import os

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)


def _shared_bins(values: list[float], fixed: tuple[float, float] | None = None, count: int = 25) -> list[float]:
    lo, hi = fixed or (min(values), max(values))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pct_ci(value: float, ci: list[float]) -> str:
    return f"{100 * value:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"
