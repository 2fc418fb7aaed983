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


def device_name(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    return name


def finish(title: str, device: str, out_dir, file_name: str) -> None:
    """The table of every recorded row (last, where a device call's output
    tail shows it) and, with an out_dir, the rows as JSON."""
    from pathlib import Path

    print(f"\n=== {title} on {device} ===")
    print(f"{'section':9} {'what':52} {'value':>12} {'unit':13} note")
    for r in ROWS:
        print(f"{r['section']:9} {r['what']:52} {r['value']:>12,.2f} {r['unit']:13} {r['note']}")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / file_name).write_text(json.dumps(dict(device=device, rows=ROWS), indent=1))


def read_rollout_groups(path) -> list[list[dict]]:
    """A scored rollouts file's groups, one per question, in sample order.
    A damaged line or an unknown gold ends the script (one line, exit 2):
    a figure over silently skipped rows, or with an unknown gold counted
    wrong, would be quietly off."""
    import sys
    from collections import defaultdict

    from looper_cli.jsonl import read_jsonl

    result = read_jsonl(path, required=("question_id", "sample_index", "text", "gold"))
    unknown = sum(row["gold"] is None for row in result.rows)
    problem = (f"{len(result.bad_lines)} damaged line(s), first at line {result.bad_lines[0]}" if result.bad_lines
               else f"{unknown} row(s) without a gold answer" if unknown
               else "no rows" if not result.rows else None)
    if problem:
        print(f"error: {path}: {problem}", file=sys.stderr)
        sys.exit(2)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in result.rows:
        groups[row["question_id"]].append(row)
    return [sorted(g, key=lambda r: r["sample_index"]) for g in groups.values()]
