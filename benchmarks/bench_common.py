"""What the GPU benchmark scripts share: the rows they record (printed as
JSON lines as they come, so a killed run still shows its figures), a timer
that waits for the GPU, and random prompts."""

from __future__ import annotations

import json
import time

ROWS: list[dict] = []


def record(section: str, what: str, value: float, unit: str, note: str = "") -> None:
    row = dict(section=section, what=what, value=round(value, 4), unit=unit, note=note)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    """(seconds, result) of fn(), GPU work included."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def random_prompts(n: int, low: int, high: int, vocab: int, seed: int) -> list[list[int]]:
    """n prompts of low..high token ids drawn from [3, vocab) (0-2 are pad, bos, eos)."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(low, high))] for _ in range(n)]
