"""`looper report` on a hand-made run folder: eval summaries and logs,
scored rollouts and a bandit state that has learnt something."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from looper_cli.compare import wilson_interval


def _eval(run: Path, name: str, outcomes: list[int]) -> None:
    folder = run / "eval" / name
    folder.mkdir(parents=True)
    rows = [{"question_id": f"q{i}", "correct": bool(c), "correct_strict": bool(c), "correct_flexible": bool(c)}
            for i, c in enumerate(outcomes)]
    (folder / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hits, n = sum(outcomes), len(outcomes)
    summary = {"n": n, "accuracy": hits / n, "accuracy_ci": list(wilson_interval(hits, n)),
               "accuracy_strict": hits / n, "accuracy_flexible": hits / n}
    (folder / "summary.json").write_text(json.dumps(summary))


def _trained_bandit_json() -> str:
    """A bandit after a few full-information updates on hand-written groups."""
    import regime_w_core as rw

    bandit = rw.Bandit(seed=0)
    groups = [["3 + 4 = 7\n#### 7", "3 + 4 = 8\n#### 8", "3 + 4 = 7\n#### 7", "#### 9"],
              ["2 * 5 = 10\n#### 10", "2 * 5 = 12\n#### 12", "#### 10"]]
    scores = rw.score_groups(groups, golds=[7, 10], questions=["3 apples and 4 pears?", "2 bags of 5?"])
    assert bandit.update(scores) > 0
    return bandit.to_json()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "demo"
    _eval(run, "sft-gsm8k", [1, 0, 1, 0, 0, 1, 0, 0, 1, 0] * 3)
    _eval(run, "dpo-gsm8k", [1, 1, 1, 0, 1, 1, 0, 1, 1, 0] * 3)
    _eval(run, "base-gsm8k", [0] * 48)  # 0% right: its CI starts exactly at 0
    rollouts = [{"question_id": f"q{i // 4}", "correct": i % 3 == 0, "reward": 0.3 + (i % 3 == 0) * 0.8,
                 "s_wm": 0.2 + 0.05 * (i % 7)} for i in range(40)]
    rollouts.append({"question_id": "q99", "correct": None, "reward": 0.1, "s_wm": 0.5})  # unknown gold
    text = "".join(json.dumps(r) + "\n" for r in rollouts) + '{"question_id": "q100", "cor'  # cut by a kill
    (run / "rollouts.jsonl").write_text(text)
    (run / "bandit.json").write_text(_trained_bandit_json())
    return run


def test_report_writes_pngs_and_markdown(run_dir, cli):
    proc = cli("report", run_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout)
    out = run_dir / "report"
    for name in ("accuracy.png", "scores.png", "arms.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text()
    assert set(written["files"]) == {str(out / n) for n in ("accuracy.png", "scores.png", "arms.png", "report.md")}
    assert "| sft-gsm8k | 30 |" in md and "| dpo-gsm8k | 30 |" in md
    # Paired comparisons of consecutive stages, on the questions both answered.
    assert "| sft-gsm8k vs base-gsm8k | 30 |" in md and "| dpo-gsm8k vs sft-gsm8k | 30 |" in md
    assert "| correct | 14 |" in md and "| incorrect | 26 |" in md
    assert "1 damaged line(s)" in md
    assert "Best arm" in md and "| W1 |" in md and "| M4 |" in md


def test_report_with_only_a_bandit_notes_the_rest(tmp_path):
    from looper_cli.report import make_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "bandit.json").write_text(_trained_bandit_json())
    written = make_report(run, tmp_path / "rep")
    assert [Path(f).name for f in written["files"]] == ["arms.png", "report.md"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "No eval summaries" in md and "No scored rollouts" in md


def test_report_draws_the_arms_of_an_rl_ablation_side_by_side(tmp_path):
    from looper_cli.report import make_report

    run = tmp_path / "study"
    for arm, slope in (("ppo-a", 0.01), ("ppo-b", -0.01)):
        (run / arm).mkdir(parents=True)
        rows = [{"step": s, "reward": 0.2 + slope * s, "accuracy": 0.05, "completions/mean_length": 100 - s,
                 "s_wm": 0.5, "loss": 0.1} for s in range(5, 30, 5)]
        (run / arm / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = make_report(run, tmp_path / "rep")
    names = [Path(f).name for f in written["files"]]
    assert names == ["curves-rl-runs.png", "curves-ppo-a.png", "curves-ppo-b.png", "report.md"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| ppo-a | 25 | 0.25 → 0.45 |" in md and "| ppo-b | 25 | 0.15 → -0.05 |" in md
