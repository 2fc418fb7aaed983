"""The built-in problem set: templated multi-step word problems with exact
integer answers and GSM8K calculator annotations (`<<a*b=c>>`).

It lets the default pipeline run with nothing downloaded, and gives tests a
problem set whose answers are known by construction. Seeded: the same seed
and split give the same problems.
"""

from __future__ import annotations

import random
from typing import Any, Callable

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jon",
         "Kemi", "Liam", "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards"]

Template = Callable[[random.Random], tuple[str, list[str], int]]


def _calc(expr: str, value: int, text: str) -> str:
    return f"{text} {expr} = <<{expr}={value}>>{value}"


def _buy_and_give(r: random.Random) -> tuple[str, list[str], int]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    packs, per, given = r.randint(2, 9), r.randint(3, 12), r.randint(1, 10)
    total = packs * per
    given = min(given, total - 1)
    left = total - given
    q = (f"{name} buys {packs} packs of {item}. Each pack has {per} {item}. "
         f"{name} gives {given} {item} to a friend. How many {item} does {name} have left?")
    steps = [_calc(f"{packs}*{per}", total, f"{name} buys"),
             _calc(f"{total}-{given}", left, f"After giving some away, {name} has")]
    return q, steps, left


def _earn_and_spend(r: random.Random) -> tuple[str, list[str], int]:
    name = r.choice(NAMES)
    hours, rate, spent = r.randint(2, 12), r.randint(5, 25), r.randint(1, 40)
    earned = hours * rate
    spent = min(spent, earned - 1)
    left = earned - spent
    q = (f"{name} works {hours} hours and earns ${rate} per hour. "
         f"Then {name} spends ${spent} on lunch. How many dollars does {name} have now?")
    steps = [_calc(f"{hours}*{rate}", earned, f"{name} earns"),
             _calc(f"{earned}-{spent}", left, "After lunch there is")]
    return q, steps, left


def _share_equally(r: random.Random) -> tuple[str, list[str], int]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    friends, each, extra = r.randint(2, 8), r.randint(2, 15), r.randint(1, 20)
    total = friends * each
    q = (f"{name} has {total} {item} and shares them equally among {friends} friends. "
         f"Each friend then finds {extra} more {item}. How many {item} does each friend have?")
    steps = [_calc(f"{total}/{friends}", each, "Each friend gets"),
             _calc(f"{each}+{extra}", each + extra, "With the ones they find, each has")]
    return q, steps, each + extra


def _three_days(r: random.Random) -> tuple[str, list[str], int]:
    name = r.choice(NAMES)
    mon = r.randint(2, 30)
    factor = r.randint(2, 4)
    less = r.randint(1, mon)
    tue = mon * factor
    wed = tue - less
    total = mon + tue + wed
    q = (f"{name} reads {mon} pages on Monday, {factor} times as many on Tuesday, and "
         f"{less} fewer pages on Wednesday than on Tuesday. How many pages does {name} read in all?")
    steps = [_calc(f"{mon}*{factor}", tue, "On Tuesday:"),
             _calc(f"{tue}-{less}", wed, "On Wednesday:"),
             _calc(f"{mon}+{tue}+{wed}", total, "In all:")]
    return q, steps, total


def _rows_and_broken(r: random.Random) -> tuple[str, list[str], int]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    boxes, rows, per_row, broken = r.randint(2, 6), r.randint(2, 5), r.randint(2, 9), r.randint(1, 9)
    per_box = rows * per_row
    total = boxes * per_box
    broken = min(broken, total - 1)
    q = (f"{name} has {boxes} boxes of {item}. Each box holds {rows} rows of {per_row} {item}. "
         f"{broken} {item} are lost. How many {item} are left?")
    steps = [_calc(f"{rows}*{per_row}", per_box, "One box holds"),
             _calc(f"{boxes}*{per_box}", total, "All the boxes hold"),
             _calc(f"{total}-{broken}", total - broken, "After the loss there are")]
    return q, steps, total - broken


def _discount(r: random.Random) -> tuple[str, list[str], int]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    count, price = r.randint(2, 10), r.choice([20, 40, 60, 80, 100])
    pct = r.choice([10, 20, 25, 50])
    full = count * price
    off = full * pct // 100
    q = (f"{name} buys {count} {item} at ${price} each. The shop gives a {pct}% discount "
         f"on the whole order. How many dollars does {name} pay?")
    steps = [_calc(f"{count}*{price}", full, "Before the discount:"),
             _calc(f"{full}*{pct}/100", off, "The discount is"),
             _calc(f"{full}-{off}", full - off, f"{name} pays")]
    return q, steps, full - off


TEMPLATES: list[Template] = [_buy_and_give, _earn_and_spend, _share_equally, _three_days,
                             _rows_and_broken, _discount]


def synthetic_problems(n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
    """`n` problems as GSM8K rows ({question, answer}). Train and test use
    disjoint seed streams so they don't share problems by construction."""
    r = random.Random(f"{split}:{seed}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        question, steps, value = r.choice(TEMPLATES)(r)
        if question in seen:
            continue
        seen.add(question)
        answer = "\n".join(s + "." for s in steps) + f"\n#### {value}"
        rows.append({"question": question, "answer": answer})
    return rows
