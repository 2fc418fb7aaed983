"""Does s_cf (counterfactual soundness) pay for brevity? Diagnostics on scored rollouts.

Issue 16's PPO arm with the Regime W reward shortened its answers from ~120 to ~20 tokens while
its sample accuracy fell and its s_wm rose. This script asks, on model rollouts of GSM8K *train*
questions (never a test set), how the scores treat such answers:

  within-group AUROC   s_cf (and each arm) ranking correct above incorrect samples of a question;
  shortcut             a one-claim answer built from the question's first two numbers
                       ("a * b = <<a*b=c>>c  #### c", almost always wrong): the share of
                       (question, correct sample) pairs whose correct sample scores no higher than
                       that shortcut (lower is better), and the mean s_cf of shortcuts vs correct
                       and incorrect samples;
  collapse             the s_wm a group of 8 identical shortcuts gets under each arm.

    python benchmarks/scf_diagnostics.py runs/study/rollouts.jsonl [more rollouts files] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

import regime_w_core as rw
from bench_common import read_rollout_groups

NUMBER = re.compile(r"\d+(?:\.\d+)?")


def shortcut(question: str) -> str | None:
    found = [float(x) for x in NUMBER.findall(question.replace(",", ""))]
    if len(found) < 2:
        return None
    a, b = (int(x) if x.is_integer() else x for x in found[:2])
    c = a * b
    c = int(c) if float(c).is_integer() else round(c, 4)
    return f"{a} * {b} = <<{a}*{b}={c}>>{c}\n#### {c}"


def within_group_auroc(scores: np.ndarray, correct: np.ndarray, offsets: np.ndarray) -> float:
    aucs = []
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        s, c = scores[lo:hi], correct[lo:hi].astype(bool)
        if c.all() or not c.any():
            continue
        pos, neg = s[c], s[~c]
        aucs.append(((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()))
    return float(np.mean(aucs)) if aucs else float("nan")


def diagnose(path: Path) -> dict:
    rows = read_rollout_groups(path)
    scores = rw.score_groups([[r["text"] for r in g] for g in rows], golds=[g[0]["gold"] for g in rows],
                             questions=[g[0]["question"] for g in rows])
    correct = np.asarray(scores.correct, dtype=float)
    offsets = np.asarray(scores.offsets)
    arm_scores = np.asarray(scores.arm_scores)  # (solutions, arms)
    result = {"rollouts": str(path), "questions": len(rows), "solutions": int(offsets[-1]),
              "accuracy": float(correct.mean()),
              "within_group_auroc": {arm: within_group_auroc(arm_scores[:, i], correct, offsets)
                                     for i, arm in enumerate(rw.ARMS)}}
    result["shortcut"] = shortcut_figures(rows, scores, correct, offsets)
    return result


def shortcut_figures(rows: list[list[dict]], scores, correct: np.ndarray, offsets: np.ndarray) -> dict:
    s_cf = np.asarray(scores.s_cf)
    texts = [shortcut(g[0]["question"]) for g in rows]
    kept = [i for i, t in enumerate(texts) if t is not None]
    single = rw.score_groups([[texts[i]] for i in kept], golds=[rows[i][0]["gold"] for i in kept],
                             questions=[rows[i][0]["question"] for i in kept])
    collapsed = rw.score_groups([[texts[i]] * 8 for i in kept], golds=[rows[i][0]["gold"] for i in kept],
                                questions=[rows[i][0]["question"] for i in kept])
    cut_cf = dict(zip(kept, np.asarray(single.s_cf)))
    beaten, pairs = 0, 0
    for gi in kept:
        lo, hi = offsets[gi], offsets[gi + 1]
        for j in range(lo, hi):
            if correct[j]:
                pairs += 1
                beaten += s_cf[j] <= cut_cf[gi]
    arm_scores = np.asarray(collapsed.arm_scores)
    return {"questions": len(kept), "shortcut_accuracy": float(np.mean(single.correct)),
            "mean_s_cf": {"shortcut": float(np.mean(single.s_cf)),
                          "correct samples": float(s_cf[correct == 1].mean()),
                          "incorrect samples": float(s_cf[correct == 0].mean())},
            "correct_not_above_shortcut": beaten / pairs if pairs else None, "correct_pairs": pairs,
            "collapsed_group_s_wm": {arm: float(arm_scores[:, i].mean()) for i, arm in enumerate(rw.ARMS)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rollouts", type=Path, nargs="+")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = [diagnose(p) for p in args.rollouts]
    for r in results:
        cut = r["shortcut"]
        print(f"{r['rollouts']}: {r['questions']} questions, {r['solutions']} solutions, "
              f"{r['accuracy']:.1%} correct")
        print("  within-group AUROC: " + ", ".join(f"{a} {v:.3f}" for a, v in r["within_group_auroc"].items()))
        print(f"  shortcut ({cut['questions']} questions, {cut['shortcut_accuracy']:.1%} correct): mean s_cf "
              + ", ".join(f"{k} {v:.3f}" for k, v in cut["mean_s_cf"].items()))
        print(f"  correct samples scoring no higher than the shortcut: {cut['correct_not_above_shortcut']:.1%} "
              f"of {cut['correct_pairs']}")
        print("  s_wm of 8 identical shortcuts: " + ", ".join(f"{a} {v:.3f}"
                                                             for a, v in cut["collapsed_group_s_wm"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
