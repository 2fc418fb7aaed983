"""maj@K against the Regime W vote@K on a scored rollouts file.

The rollouts are re-scored without learning (the bandit's best arm, as eval
uses it), then each question's K answers are voted with unit weights
(maj@K) and with s_wm weights (Regime W vote@K), through the same vote
function `looper eval --samples K` uses. Prints both with Wilson CIs and the
paired McNemar test, and pass@K (some sample right: what any vote could reach).

    python benchmarks/vote_from_rollouts.py runs/NAME/rollouts.jsonl [--bandit runs/NAME/bandit.json] [--k 8,16,32]

`--k` votes on the first K samples of each question (by sample index), each
K scored by Regime W as a group of K, as if only K had been drawn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_common import read_rollout_groups
from looper_cli.compare import mcnemar_exact_p, wilson_interval
from looper_cli.evaluate import _is_correct, weighted_vote
from looper_cli.scoring import load_bandit, score_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rollouts", type=Path)
    ap.add_argument("--bandit", type=Path, default=None, help="default: bandit.json next to the rollouts")
    ap.add_argument("--k", default=None, help="comma list of group sizes (default: all samples)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    every = read_rollout_groups(args.rollouts)
    bandit = load_bandit(args.bandit or args.rollouts.parent / "bandit.json")
    sizes = [int(k) for k in args.k.split(",")] if args.k else [min(len(g) for g in every)]
    figures = [vote_at(every, k, bandit) for k in sizes]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def vote_at(every: list[list[dict]], k: int, bandit) -> dict:
    rows = [g[:k] for g in every]
    if any(len(g) < k for g in rows):
        raise SystemExit(f"some questions have fewer than {k} samples")
    scored = score_groups([[r["text"] for r in g] for g in rows], [[r["tokens"] for r in g] for g in rows],
                          bandit, golds=[g[0]["gold"] for g in rows],
                          questions=[g[0].get("question") for g in rows], learn=False)
    maj, vote, some = [], [], []
    for gi, group in enumerate(rows):
        lo, hi = scored.offsets[gi], scored.offsets[gi + 1]
        answers = [scored.row_fields(i)["answer"] for i in range(lo, hi)]
        gold = group[0]["gold"]
        maj.append(_is_correct(weighted_vote(answers, [1.0] * len(answers)), gold))
        vote.append(_is_correct(weighted_vote(answers, scored.s_wm[lo:hi].tolist()), gold))
        some.append(bool((scored.correct[lo:hi] == 1).any()))
    n = len(rows)
    print(f"{n} questions x {k} samples, arm used: {scored.arm[0]} (best posterior mean)")
    figure = {"k": k, "questions": n, "arm": scored.arm[0]}
    for key, name, hits in (("maj", f"maj@{k}", maj), ("vote", f"Regime W vote@{k}", vote),
                            ("pass", f"pass@{k}", some)):
        lo, hi = wilson_interval(sum(hits), n)
        print(f"{name:>18}: {sum(hits) / n:.1%} [{lo:.1%}, {hi:.1%}]")
        figure.update({key: sum(hits) / n, f"{key}_ci": [lo, hi]})
    only_maj = sum(m and not v for m, v in zip(maj, vote))
    only_vote = sum(v and not m for m, v in zip(maj, vote))
    p = mcnemar_exact_p(only_maj, only_vote)
    print(f"only maj right / only vote right: {only_maj} / {only_vote}; McNemar exact p = {p:.4g}")
    return {**figure, "only_maj": only_maj, "only_vote": only_vote, "mcnemar_p": p}


if __name__ == "__main__":
    main()
