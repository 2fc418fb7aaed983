"""How well each Regime W arm ranks correct solutions above incorrect ones.

Synthetic mode (default): GSM8K train reference solutions (calculator
annotations and the `#### N` line kept) mixed with corrupted copies of three
kinds, made once per question so that copies of one kind agree on their wrong
answer, as a model's repeated mistakes do:

  arith     one claim states a wrong result, later steps build on it;
  swap      one operand taken from the question is replaced by another
            number of the question, the arithmetic stays right;
  constant  the final answer is replaced by an unrelated constant.

Each question gets a group of K=8: 1..K-1 correct copies, the rest corrupted.
Rollout mode (`--rollouts FILE.jsonl`, rows with question_id, text, correct,
and optionally question / gold) scores model samples the same way.

Prints, per arm, the AUROC of s_wm for correct vs incorrect pooled over all
solutions and the mean within-group AUROC over mixed groups.

    python benchmarks/signal_auroc.py --questions 2000
    python benchmarks/signal_auroc.py --rollouts runs/x/rollouts.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

import regime_w_core as rw

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calc(expr: str) -> float | None:
    """The four operations over numbers, via the AST (never eval)."""
    def walk(n: ast.AST) -> float:
        if isinstance(n, ast.Expression):
            return walk(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.BinOp) and type(n.op) in OPS:
            return OPS[type(n.op)](walk(n.left), walk(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -walk(n.operand)
        raise ValueError(expr)

    try:
        return walk(ast.parse(expr.replace("x", "*"), mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError):
        return None


def fmt(v: float) -> str:
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0").rstrip(".")


def rewrite(solution: str, first_change) -> str | None:
    """Replays the annotations; `first_change(i, expr, result)` may return a
    new (expr, result) for one claim, and every later claim is recomputed
    with the changed values flowing through. None when nothing changed."""
    remap: dict[str, str] = {}
    changed = False
    out, last = [], 0
    for i, m in enumerate(ANNOTATION.finditer(solution)):
        expr, result = m.group(1), m.group(2)
        new_expr = NUMBER.sub(lambda n: remap.get(n.group(0), n.group(0)), expr)
        alt = None if changed else first_change(i, new_expr, result)
        if alt is not None:
            new_expr, new_result = alt
            changed = True
        else:
            v = calc(new_expr)
            new_result = fmt(v) if v is not None and new_expr != expr else result
        if new_result != result:
            remap[result] = new_result
        # The prose before the annotation usually repeats its expression.
        local = dict(remap)
        local.update((a, b) for a, b in zip(NUMBER.findall(expr), NUMBER.findall(new_expr)) if a != b)
        out.append(NUMBER.sub(lambda n: local.get(n.group(0), n.group(0)), solution[last : m.start()]))
        out.append(f"<<{new_expr}={new_result}>>")
        # The visible copy of the result right after the annotation.
        tail = solution[m.end() :]
        if tail.startswith(result):
            out.append(new_result)
            last = m.end() + len(result)
        else:
            last = m.end()
    if not changed:
        return None
    rest = solution[last:]
    final = re.search(r"####\s*(\S+)", rest)
    if final and final.group(1) in remap:
        rest = rest[: final.start(1)] + remap[final.group(1)] + rest[final.end(1) :]
    return "".join(out) + rest


def corrupt_arith(solution: str, rng: random.Random) -> str | None:
    n = len(ANNOTATION.findall(solution))
    if n == 0:
        return None
    target = rng.randrange(n)

    def change(i, expr, result):
        if i != target:
            return None
        v = calc(expr)
        if v is None:
            return None
        return expr, fmt(v + rng.choice([-1, 1]) * max(1, round(abs(v) * rng.uniform(0.05, 0.3))))

    return rewrite(solution, change)


def corrupt_swap(solution: str, question: str, rng: random.Random) -> str | None:
    qnums = sorted(set(NUMBER.findall(question)))
    if len(qnums) < 2:
        return None

    def change(i, expr, result):
        operands = [n for n in NUMBER.findall(expr) if n in qnums]
        if not operands:
            return None
        old = rng.choice(operands)
        new = rng.choice([q for q in qnums if q != old])
        new_expr = re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d.])", new, expr, count=1)
        v = calc(new_expr)
        return None if v is None or v < 0 else (new_expr, fmt(v))

    return rewrite(solution, change)


def corrupt_constant(solution: str, gold: float, rng: random.Random) -> str:
    constant = rng.choice([c for c in (1, 2, 3, 5, 7, 10, 12, 20, 42, 100) if abs(c - gold) > 1e-9])
    return re.sub(r"####\s*\S+", f"#### {constant}", solution)


def synthetic_groups(path: Path, n_questions: int, k: int, seed: int):
    rng = random.Random(seed)
    rows = [json.loads(line) for line in path.open()][:n_questions]
    groups, golds, questions = [], [], []
    for row in rows:
        solution, question = row["answer"], row["question"]
        gold = rw.extract_answer(solution, mode="strict")
        if gold is None:
            continue
        wrong = [
            corrupt_arith(solution, rng),
            corrupt_swap(solution, question, rng),
            corrupt_constant(solution, gold.value, rng),
        ]
        wrong = [w for w in wrong if w is not None and not rw.answers_equal(_value(w), gold.value)]
        n_correct = rng.randint(1, k - 1)
        group = [solution] * n_correct + [rng.choice(wrong) for _ in range(k - n_correct)]
        rng.shuffle(group)
        groups.append(group)
        golds.append(gold.value)
        questions.append(question)
    return groups, golds, questions


def _value(text: str) -> float | None:
    a = rw.extract_answer(text)
    return a.value if a else None


def rollout_label(row: dict) -> int | None:
    """1 / 0 from the row's `correct` (bool or int; -1 or None is unknown),
    else from its `gold` when it has one."""
    c = row.get("correct")
    if c is not None and c != -1:
        return int(bool(c))
    gold = row.get("gold")
    if isinstance(gold, str):
        parsed = rw.extract_answer(gold)
        gold = parsed.value if parsed else None
    if gold is None:
        return None
    answer = rw.extract_answer(row["text"])
    return int(answer is not None and rw.answers_equal(answer.value, float(gold)))


def rollout_groups(path: Path, data: Path):
    by_q: dict[str, list[dict]] = defaultdict(list)
    for line in path.open():
        row = json.loads(line)
        by_q[str(row["question_id"])].append(row)
    dataset = [json.loads(line) for line in data.open()] if data.is_file() else []
    groups, questions, labels = [], [], []
    for qid, rows in by_q.items():
        rows = [r for r in rows if rollout_label(r) is not None]
        if not rows:
            continue
        question = rows[0].get("question")
        if question is None and qid.isdigit() and int(qid) < len(dataset):
            question = dataset[int(qid)]["question"]
        groups.append([r["text"] for r in rows])
        questions.append(question)
        labels.extend(rollout_label(r) for r in rows)
    return groups, questions, np.array(labels, dtype=np.int64)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks (ties count 1/2)."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = pos.sum(), neg.sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rollouts", type=Path, help="JSONL rows with question_id, text, correct")
    args = ap.parse_args()

    if args.rollouts:
        groups, questions, labels = rollout_groups(args.rollouts, args.data)
        scores = rw.score_groups(groups, questions=questions)
        source = f"rollouts {args.rollouts}"
    else:
        groups, golds, questions = synthetic_groups(args.data, args.questions, args.k, args.seed)
        scores = rw.score_groups(groups, golds=golds, questions=questions)
        labels = scores.correct.astype(np.int64)
        source = f"GSM8K train, {len(groups)} synthetic groups of {args.k}"

    mixed = []
    for g in range(scores.n_groups):
        lab = labels[scores.offsets[g] : scores.offsets[g + 1]]
        if lab.min() != lab.max():
            mixed.append(g)
    print(f"{source}: {scores.n_solutions} solutions, {labels.mean():.1%} correct, {len(mixed)} mixed groups")
    print()
    print(f"| arm | {'name':<18} | pooled AUROC | within-group AUROC |")
    print("|-----|--------------------|--------------|--------------------|")
    results = []
    for a, (arm, name) in enumerate(zip(rw.ARMS, rw.ARM_NAMES)):
        pooled = auroc(scores.arm_scores[:, a], labels)
        within = [
            auroc(scores.arm_scores[scores.offsets[g] : scores.offsets[g + 1], a], labels[scores.offsets[g] : scores.offsets[g + 1]])
            for g in mixed
        ]
        results.append((arm, pooled, float(np.mean(within)) if within else float("nan")))
        print(f"| {arm}  | {name:<18} | {pooled:>12.4f} | {results[-1][2]:>18.4f} |")
    best = max(results, key=lambda r: r[2])
    print()
    print(f"best arm {best[0]}: within-group {best[2]:.4f} vs W1 {results[0][2]:.4f} "
          f"(+{best[2] - results[0][2]:.4f}); pooled {best[1]:.4f} vs W1 {results[0][1]:.4f}")


if __name__ == "__main__":
    main()
