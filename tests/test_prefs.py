"""Preference pairs: the REGIME_W.md rules on hand-built scored rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from looper_cli.errors import UserError
from looper_cli.prefs import PrefsStageConfig, build_pairs, pair_statistics, run_prefs


def row(qid: str, k: int, text: str, correct: bool | None, reward: float, s_wm: float,
        tokens: int = 10) -> dict:
    return {"question_id": qid, "prompt": f"<|user|>\n{qid}?<|end|>\n<|assistant|>\n", "question": f"{qid}?",
            "sample_index": k, "text": text, "tokens": tokens, "correct": correct, "reward": reward,
            "s_wm": s_wm}


def mixed_group(qid: str = "q1") -> list[dict]:
    return [
        row(qid, 0, "right a #### 4", True, 1.4, 0.8, tokens=12),
        row(qid, 1, "right b #### 4", True, 1.2, 0.5, tokens=20),
        row(qid, 2, "right a #### 4", True, 1.4, 0.8, tokens=12),  # same text as sample 0
        row(qid, 3, "wrong c #### 5", False, 0.1, 0.2, tokens=30),
        row(qid, 4, "wrong d #### 6", False, 0.0, 0.1, tokens=8),
        row(qid, 5, "right e #### 4", True, 1.295, 0.795, tokens=11),  # s_wm within 0.01 of sample 0
    ]


def test_correctness_pairs_put_a_correct_solution_over_an_incorrect_one():
    group = mixed_group()
    pairs = build_pairs([group], kinds=("correctness",), max_per_question=100)
    correct = {r["text"] for r in group if r["correct"]}
    wrong = {r["text"] for r in group if not r["correct"]}
    assert pairs and all(p["kind"] == "correctness" for p in pairs)
    assert all(p["chosen"] in correct and p["rejected"] in wrong for p in pairs)
    # highest reward chosen first, lowest reward rejected first
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("right a #### 4", "wrong d #### 6")
    assert pairs[0]["chosen_score"] == 1.4 and pairs[0]["rejected_score"] == 0.0
    # 3 distinct correct texts x 2 incorrect = 6 distinct pairs (the duplicate text adds none)
    assert len(pairs) == 6


def test_coherence_pairs_respect_the_threshold_and_stay_among_correct_solutions():
    group = mixed_group()
    pairs = build_pairs([group], kinds=("coherence",), threshold=0.01, max_per_question=100)
    by_text = {r["text"]: r for r in group}
    assert pairs and all(p["kind"] == "coherence" for p in pairs)
    for p in pairs:
        chosen, rejected = by_text[p["chosen"]], by_text[p["rejected"]]
        assert chosen["correct"] and rejected["correct"]
        assert chosen["s_wm"] - rejected["s_wm"] > 0.01
        assert (p["chosen_score"], p["rejected_score"]) == (chosen["s_wm"], rejected["s_wm"])
    # a (0.8) vs e (0.795) is under the threshold: no pair between them
    assert not any({p["chosen"], p["rejected"]} == {"right a #### 4", "right e #### 4"} for p in pairs)
    assert len(build_pairs([group], kinds=("coherence",), threshold=0.5)) == 0


def test_no_duplicates_no_identical_texts_and_caps():
    groups = [mixed_group(f"q{i}") for i in range(5)]
    groups.append([row("q9", 0, "same #### 1", True, 1.0, 0.9), row("q9", 1, "same #### 1", False, 0.0, 0.1)])
    pairs = build_pairs(groups, max_per_question=2)
    keys = [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    assert len(keys) == len(set(keys))
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert not any(p["question_id"] == "q9" for p in pairs)
    for qid in {p["question_id"] for p in pairs}:
        for kind in ("correctness", "coherence"):
            assert sum(p["question_id"] == qid and p["kind"] == kind for p in pairs) <= 2
    capped = build_pairs(groups, max_per_question=2, max_pairs=7)
    assert len(capped) == 7
    assert len({p["question_id"] for p in capped}) == 5  # the total cap spreads over questions


def test_unknown_correctness_and_single_solution_groups_give_no_pairs():
    groups = [[row("a", 0, "x 1", None, 0.3, 0.9), row("a", 1, "y 2", None, 0.2, 0.1)],
              [row("b", 0, "z 3", True, 1.0, 1.0)]]
    assert build_pairs(groups) == []


def test_pair_statistics_report_length_bias():
    pairs = build_pairs([mixed_group()], kinds=("correctness",), max_per_question=100)
    stats = pair_statistics(pairs)
    assert stats["pairs_correctness"] == len(pairs) and stats["pairs_coherence"] == 0
    longer = sum(p["chosen_tokens"] > p["rejected_tokens"] for p in pairs) / len(pairs)
    assert stats["chosen_longer_share"] == pytest.approx(longer)


def test_run_prefs_writes_a_file_datasets_and_dpo_can_read(tmp_path: Path):
    rollouts = tmp_path / "rollouts.jsonl"
    rows = mixed_group("q1") + mixed_group("q2")
    rollouts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_prefs(PrefsStageConfig(rollouts=rollouts, max_per_question=3))
    out = tmp_path / "prefs.jsonl"
    assert summary["pairs"] == summary["pairs_correctness"] + summary["pairs_coherence"] > 0
    assert (tmp_path / "prefs.config.toml").is_file() and (tmp_path / "prefs.summary.json").is_file()
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(out), split="train")
    assert len(ds) == summary["pairs"]
    assert {"prompt", "chosen", "rejected", "kind", "question_id", "chosen_score", "rejected_score",
            "chosen_tokens", "rejected_tokens"} <= set(ds.column_names)
    assert ds[0]["prompt"].endswith("<|assistant|>\n")


def test_unscored_rollouts_and_bad_kinds_are_user_errors(tmp_path: Path):
    rollouts = tmp_path / "r.jsonl"
    rollouts.write_text(json.dumps({"question_id": "q", "text": "t", "tokens": 1}) + "\n")
    with pytest.raises(UserError, match="not scored"):
        run_prefs(PrefsStageConfig(rollouts=rollouts))
    with pytest.raises(UserError, match="unknown pair kind"):
        run_prefs(PrefsStageConfig(rollouts=rollouts, kinds=["length"]))
    with pytest.raises(UserError, match="not found"):
        run_prefs(PrefsStageConfig(rollouts=tmp_path / "missing.jsonl"))


def test_prefs_cli_missing_file_is_one_line_exit_2(cli, tmp_path: Path):
    result = cli("prefs", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not found" in result.stderr
