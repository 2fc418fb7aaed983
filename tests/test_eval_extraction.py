"""Judging hand-written completions through the product's extractor
(regime_w_core.extract_answer): strict vs flexible vs auto, R1 think blocks,
maj@K / weighted votes, and the summary's Platinum split on real rows."""

from __future__ import annotations

import pytest

from looper_cli.evaluate import answer_text, judge, summarise, weighted_vote

CASES = [
    # (completion, gold, auto, strict, flexible) — None: no answer in that mode
    ("She has 3 + 4 = 7 apples.\n#### 7", 7, 7, 7, 7),
    ("Total is 1,234 dollars.\n#### 1,234", 1234, 1234, 1234, 1234),
    ("It costs $18.\n#### $18", 18, 18, 18, 18),
    ("The share is 25%.\n#### 25%", 25, 25, 25, 25),
    ("So the total is 42.", 42, 42, None, 42),  # trailing period, no marker
    ("We get \\boxed{72} in the end, after 3 steps.", 72, 72, None, 3),
    ("Adding up gives 10 + 5 = 15. The answer is 15", 15, 15, None, 15),
    ("The temperature drops to -5 degrees.\n#### -5", -5, -5, -5, -5),
    ("Each costs 2.5 dollars.\n#### 2.50", 2.5, 2.5, 2.5, 2.5),
    ("#### 18.00", 18, 18, 18, 18),
    ("#### 12\nI used 2 steps.", 12, 12, 12, 2),  # flexible takes the last number
    ("I am not sure.", 5, None, None, None),
]


@pytest.mark.parametrize("completion,gold,auto,strict,flexible", CASES)
def test_extraction_modes(completion, gold, auto, strict, flexible):
    verdict = judge(completion, gold)
    for key, expected in (("answer", auto), ("answer_strict", strict), ("answer_flexible", flexible)):
        if expected is None:
            assert verdict[key] is None, (key, verdict)
        else:
            assert verdict[key] == pytest.approx(expected), (key, verdict)
    assert verdict["correct"] == (auto is not None and auto == pytest.approx(gold))
    assert verdict["correct_strict"] == (strict is not None and strict == pytest.approx(gold))
    assert verdict["correct_flexible"] == (flexible is not None and flexible == pytest.approx(gold))


def test_think_blocks_are_skipped_for_extraction_only():
    completion = "<think>maybe 3 * 4 = 12, or 99?</think>\nShe pays 8 in total.\n#### 8"
    assert answer_text(completion).strip().endswith("#### 8")
    verdict = judge(completion, 8)
    assert verdict["correct"] and verdict["correct_strict"] and verdict["correct_flexible"]
    # A think block that never closed (ran out of tokens) holds no answer.
    unfinished = "<think>first 5 + 6 = 11, then #### 11"
    assert judge(unfinished, 11)["answer"] is None
    # R1 templates open <think> in the prompt: only its closing tag is generated.
    assert judge("so 7 it is</think> The answer is 9.", 9)["correct"]


def test_votes_cluster_equal_answers():
    assert weighted_vote([3.0, 4.0, 3.0, None], [1, 1, 1, 1]) == 3.0
    assert weighted_vote([18.0, 18.00, 7.0], [1, 1, 1]) == 18.0
    # Weights (s_wm) can overturn a majority: 7 carries more coherence.
    assert weighted_vote([3.0, 3.0, 7.0], [0.1, 0.2, 0.9]) == 7.0
    # Ties go to the answer seen first; no answers, no vote.
    assert weighted_vote([5.0, 6.0], [1, 1]) == 5.0
    assert weighted_vote([None, None], [1, 1]) is None


def test_summary_splits_platinum_by_cleaning_status(platinum_dir):
    from looper_cli.data import load_problems

    problems = load_problems(platinum_dir, split="test")
    wanted = {"consensus": 3, "verified": 2, "revised": 2}
    picked = []
    for p in problems:
        status = p.meta["cleaning_status"]
        if wanted.get(status, 0) > 0:
            wanted[status] -= 1
            picked.append(p)
    assert len(picked) == 7
    # Right on consensus and revised questions, wrong on verified ones.
    rows = []
    for p in picked:
        right = p.meta["cleaning_status"] != "verified"
        text = f"Working it out.\n#### {p.gold if right else p.gold + 1}"
        rows.append({"question_id": p.id, "tokens": 5, "finished": True, **judge(text, p.gold), **p.meta})
    summary = summarise(rows, samples=0)
    assert summary["n"] == 7 and summary["accuracy"] == pytest.approx(5 / 7)
    split = summary["by_cleaning_status"]
    assert set(split) == {"consensus", "verified", "revised"}
    assert split["consensus"]["accuracy"] == 1.0 and split["consensus"]["n"] == 3
    assert split["verified"]["accuracy"] == 0.0 and split["verified"]["n"] == 2
    assert split["revised"]["accuracy_strict"] == 1.0
