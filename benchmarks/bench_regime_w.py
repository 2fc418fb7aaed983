"""Regime W scoring throughput against rapidfuzz and a pure-Python reference.

One run generates seeded GSM8K-like groups (K=8 solutions of ~300 words,
prose steps with `a op b = c` claims, some solutions with slips), then times:

  (a) regime_w_core.score_groups on every group, from raw text, with golds and
      questions: every score and every arm;
  (b) rapidfuzz process.cpdist, normalised Levenshtein over word tokens,
      workers=-1, on the same within-group pairs (a subset: it is slow);
  (c) a pure-Python path similarity (word LCS + value overlap) on a small
      subset.

    python benchmarks/bench_regime_w.py --groups 100000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
from itertools import combinations

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Mark", "Tina", "Ken", "Alexis"]
ITEMS = ["clips", "apples", "books", "pages", "cookies", "marbles", "dollars", "stickers", "eggs", "pencils"]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
SYMBOL = {"+": ["+"], "-": ["-"], "*": ["*", "x", "×"], "/": ["/", "÷"]}
TEMPLATES = [
    "{name} starts with {a} {item} and the next part of the problem changes that, so {a} {op} {b} = {c} {item}.",
    "Then we work out the new amount of {item} this way: {a} {op} {b} = {c}, which is what {name} has now.",
    "Next, the {item} are combined with the other number given in the question: {a} {op} {b} = {c} {item} in total.",
    "So {name} now has {a} {op} {b} = {c} {item}, because the question says the amount changes by {b}.",
    "After that step we know that {a} {op} {b} = {c}, so there are {c} {item} left for {name} to count.",
    "We also need the result of {a} {op} {b}, which is {c} {item}, before we can move on to the last part.",
]
FILLER = [
    "Let us check the units again before we continue with the calculation.",
    "This matches what the question tells us about the {item} that {name} has.",
    "We keep this number in mind because it is needed in the following step.",
]


def plan(rng: random.Random, steps: int) -> tuple[list[int], list[tuple[int, str, int, int]]]:
    """Question numbers and a chain of integer operations over them."""
    inputs = [rng.randint(2, 60) for _ in range(6)]
    chain, value = [], inputs[0]
    for s in range(steps):
        op = rng.choice("+-*/")
        b = inputs[(s + 1) % len(inputs)] if rng.random() < 0.6 else rng.randint(2, 12)
        if op == "/" and value % b:
            op = "+"
        if op == "*" and abs(value) > 10_000:
            op = "-"
        c = OPS[op](value, b)
        chain.append((value, op, b, c))
        value = c
    return inputs, chain


def render(rng: random.Random, chain, name: str, item: str, slip: bool) -> str:
    lines, shift = [], 0
    slip_at = rng.randrange(len(chain)) if slip else -1
    for s, (a, op, b, c) in enumerate(chain):
        if s == slip_at:
            shift = rng.choice([-2, -1, 1, 3])
        a, c = (a + shift if s > slip_at >= 0 else a), c + shift
        t = rng.choice(TEMPLATES)
        lines.append(t.format(name=name, item=item, a=a, b=b, c=c, op=rng.choice(SYMBOL[op])))
        if rng.random() < 0.3:
            lines.append(rng.choice(FILLER).format(name=name, item=item))
    lines.append(f"#### {chain[-1][3] + shift}")
    return "\n".join(lines)


def generate(n_groups: int, k: int = 8, seed: int = 0):
    rng = random.Random(seed)
    groups, golds, questions = [], [], []
    for _ in range(n_groups):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        inputs, chain = plan(rng, steps=12)
        questions.append(f"{name} has {inputs[0]} {item}. " + " ".join(f"Another number is {x}." for x in inputs[1:]))
        golds.append(float(chain[-1][3]))
        groups.append([render(rng, chain, name, item, slip=rng.random() < 0.35) for _ in range(k)])
    return groups, golds, questions


WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*|[-+*/=^%]")


def words(text: str) -> list[str]:
    return [w.lower().replace(",", "") for w in WORD.findall(re.sub(r"<<[^>]*>>", " ", text))]


CLAIM_VALUE = re.compile(r"=\s*\$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


def python_path_similarity(a: str, b: str) -> float:
    """The reference: word LCS (dynamic programme) and stated-value overlap.
    It keeps the stopwords the core drops (their list stays in the compiled
    core), so it runs on longer streams than the core does."""
    ta, tb = words(a), words(b)
    prev = [0] * (len(tb) + 1)
    for x in ta:
        cur = [0]
        for j, y in enumerate(tb):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    seq = 2 * prev[-1] / (len(ta) + len(tb)) if ta or tb else 0.0
    va = sorted(float(v.replace(",", "")) for v in CLAIM_VALUE.findall(a))
    vb = sorted(float(v.replace(",", "")) for v in CLAIM_VALUE.findall(b))
    if not va and not vb:
        return seq
    common, rest = 0, list(vb)
    for v in va:
        if v in rest:
            rest.remove(v)
            common += 1
    return 0.5 * seq + 0.5 * 2 * common / (len(va) + len(vb))


def within_pairs(groups):
    for g in groups:
        yield from combinations(g, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rapidfuzz-groups", type=int, default=5_000, help="subset timed with rapidfuzz")
    ap.add_argument("--python-pairs", type=int, default=300, help="pairs timed with the pure-Python reference")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import regime_w_core as rw

    t0 = time.perf_counter()
    groups, golds, questions = generate(args.groups, args.k, args.seed)
    gen_s = time.perf_counter() - t0
    n_pairs = args.groups * args.k * (args.k - 1) // 2
    mean_words = sum(len(s.split()) for s in groups[0]) / args.k
    print(f"generated {args.groups} groups x {args.k} solutions (~{mean_words:.0f} words each) in {gen_s:.1f}s")

    # One small untimed call first: thread pool and allocator start-up are
    # paid once per process, not per batch.
    rw.score_groups(groups[:200], golds=golds[:200], questions=questions[:200])
    # The 2-core machine is shared: CPU seconds and the load average say how
    # much of the wall time was ours.
    load = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    scores = rw.score_groups(groups, golds=golds, questions=questions)
    rw_s, rw_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rw_rate = n_pairs / rw_s
    assert scores.n_solutions == args.groups * args.k

    rows = [("Regime W score_groups (all scores, all arms)", n_pairs, rw_s, rw_rate)]

    try:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        print("rapidfuzz not installed: skipping (b)")
        rf_rate = float("nan")
    else:
        sub = groups[: args.rapidfuzz_groups]
        tokenised = [[words(s) for s in g] for g in sub]
        left, right = zip(*within_pairs(tokenised))
        t0 = time.perf_counter()
        process.cpdist(left, right, scorer=Levenshtein.normalized_similarity, processor=None, workers=-1)
        rf_s = time.perf_counter() - t0
        rf_rate = len(left) / rf_s
        rows.append(("rapidfuzz cpdist word Levenshtein (workers=-1, pre-split)", len(left), rf_s, rf_rate))

    pairs = list(within_pairs(groups[: max(1, args.python_pairs // 28 + 1)]))[: args.python_pairs]
    t0 = time.perf_counter()
    for a, b in pairs:
        python_path_similarity(a, b)
    py_s = time.perf_counter() - t0
    py_rate = len(pairs) / py_s
    rows.append(("pure-Python path similarity (reference)", len(pairs), py_s, py_rate))

    print()
    print(f"| {'method':<58} | {'pairs':>9} | {'seconds':>8} | {'pairs/s':>10} | {'Regime W x':>10} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 10}|{'-' * 12}|{'-' * 12}|")
    for name, n, s, rate in rows:
        print(f"| {name:<58} | {n:>9,} | {s:>8.2f} | {rate:>10,.0f} | {rw_rate / rate:>10.1f} |")
    print()
    print(f"Regime W: {rw_cpu:.2f} CPU-s over {os.cpu_count()} cores ({n_pairs / rw_cpu:,.0f} pairs per CPU-second), "
          f"load average {load:.2f} before the run")
    print(f"goal: >= 280,000 pairs/s and >= 7x rapidfuzz; got {rw_rate:,.0f} pairs/s, {rw_rate / rf_rate:.1f}x rapidfuzz, "
          f"{rw_s:.2f}s for {args.groups:,} groups")


if __name__ == "__main__":
    main()
