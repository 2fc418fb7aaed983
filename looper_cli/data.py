"""GSM8K-format problems from a local JSONL file or folder, a hub dataset,
or the built-in synthetic set.

A problem's id is a hash of its question text, so it is the same in GSM8K
test and in Platinum (which re-labels that set) and survives reordering:
paired comparisons and resume both key on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looper_cli.errors import UserError, require_counts
from looper_cli.jsonl import read_jsonl, wrong_field

# Short names users type, mapped to hub (dataset id, config).
HUB_ALIASES: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "openai/gsm8k": ("openai/gsm8k", "main"),
    "gsm8k-platinum": ("madrylab/gsm8k-platinum", "main"),
    "madrylab/gsm8k-platinum": ("madrylab/gsm8k-platinum", "main"),
}
SYNTHETIC = "synthetic"
# Far beyond any grade-school problem (GSM8K's longest is under 1,000): a
# longer "question" is a broken file, and would stall or crash generation.
MAX_QUESTION_CHARS = 20_000
BARE_ANSWERS_HINT = "(--bare-answers reads an answer without a '#### N' line as if it were that line)"


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # the reference solution, ending in `#### N`
    gold: float | None  # parsed from `#### N` by the Regime W extractor
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. cleaning_status

    def to_row(self) -> dict[str, Any]:
        return {"question_id": self.id, "question": self.question, "answer": self.answer,
                "gold": self.gold, **self.meta}


def question_id(question: str) -> str:
    normalised = " ".join(question.split())
    return "q" + hashlib.sha1(normalised.encode("utf-8")).hexdigest()[:12]


def parse_gold(answer: str, bare_answers: bool = False) -> float | None:
    """The gold answer is the `#### N` of the reference solution. With
    `bare_answers`, an answer without that line is read as if it were the
    line (`18`, `1,234`, `$18`): the extractor stays the only reader."""
    from regime_w_core import extract_answer

    found = extract_answer(answer, "strict")
    if found is None and bare_answers:
        found = extract_answer(f"#### {answer.strip()}", "strict")
    return None if found is None else found.value


# (where the row came from, for messages; the row)
LabelledRows = list[tuple[str, dict[str, Any]]]


def load_problems(source: str | Path, split: str = "train", limit: int | None = None,
                  seed: int = 0, bare_answers: bool = False) -> list[Problem]:
    """Problems from `source`: a .jsonl file, a folder holding `<split>.jsonl`,
    `synthetic[:N]`, or a hub id (`gsm8k`, `gsm8k-platinum`, `openai/gsm8k`, ...).
    Every row must have a text question and a readable gold answer: a gold
    that cannot be read is an error naming the row, never a silent 0%."""
    require_counts({"--limit": limit})
    text = str(source)
    split, part = parse_split(split)
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        from looper_cli.synthetic import synthetic_problems

        rows = synthetic_problems(_synthetic_count(text, limit), seed=seed, split=split)
        labelled = [(f"{text} row {i}", r) for i, r in enumerate(rows, start=1)]
    else:
        path = Path(text).expanduser()
        if path.exists():
            labelled = _rows_from_path(path, split)
        elif text in HUB_ALIASES or _looks_like_hub_id(text):
            labelled = _rows_from_hub(text, split)
        else:
            raise UserError(f"data not found: {text} (give a .jsonl file, a folder, "
                            f"'{SYNTHETIC}', or a hub id such as gsm8k)")
    labelled = labelled[_slice_of(part, len(labelled))]
    problems = _to_problems(labelled[:limit] if limit else labelled, bare_answers)
    if not problems:
        raise UserError(f"no problems in {text} (split {split}{part})")
    return problems


# `train[:-500]`, `train[-500:]`, `train[:90%]`: the hub's slice syntax, applied
# the same way to local files, so a held-out slice of train is one option away.
_SPLIT_SLICE = re.compile(r"^(?P<name>[\w.-]+)(?P<part>\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str) -> tuple[str, str]:
    """(split name, slice text or ''), or a UserError for anything else."""
    found = _SPLIT_SLICE.match(split.strip())
    if not found:
        raise UserError(f"--split '{split}' is not a split: give a name such as train, or a slice "
                        f"such as train[:-500], train[-500:] or train[:90%]")
    return found["name"], found["part"] or ""


def _slice_of(part: str, count: int) -> slice:
    if not part:
        return slice(None)
    start, stop = part[1:-1].split(":")
    return slice(_slice_bound(start, count), _slice_bound(stop, count))


def _slice_bound(bound: str, count: int) -> int | None:
    if not bound:
        return None
    if bound.endswith("%"):
        return round(count * int(bound[:-1]) / 100)
    return int(bound)


def _synthetic_count(text: str, limit: int | None) -> int:
    if ":" not in text:
        return limit or 200
    count = text.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        raise UserError(f"'{text}': the number of synthetic problems must be a whole number above 0")
    return int(count)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _rows_from_path(path: Path, split: str) -> LabelledRows:
    if path.is_dir():
        candidates = [path / f"{split}.jsonl", *sorted(path.glob(f"*{split}*.jsonl"))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(f"no {split}.jsonl in folder {path}")
        path = found
    result = read_jsonl(path, required=("question", "answer"))
    if result.bad_lines:
        raise UserError(f"{path}: {len(result.bad_lines)} malformed line(s), first at line "
                        f"{result.bad_lines[0]} (each line needs 'question' and 'answer')")
    return [(f"{path} line {line}", row) for line, row in zip(result.lines, result.rows)]


def _rows_from_hub(name: str, split: str) -> LabelledRows:
    dataset_id, config = HUB_ALIASES.get(name, (name, None))
    try:
        import datasets
    except ImportError:
        raise UserError("loading from the hub needs the 'datasets' package") from None
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:  # network, unknown id, unknown split
        raise UserError(f"could not load {dataset_id} ({split}) from the hub: {err}".splitlines()[0]) from None
    return [(f"{dataset_id} ({split}) row {i}", dict(r)) for i, r in enumerate(ds, start=1)]


def _to_problems(rows: LabelledRows, bare_answers: bool = False) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for where, row in rows:
        question, answer, gold = _checked_fields(where, row, bare_answers)
        qid = question_id(question)
        if qid in seen:  # a repeated question keeps a distinct, stable id
            seen[qid] += 1
            qid = f"{qid}-{seen[qid]}"
        else:
            seen[qid] = 1
        meta = {k: row[k] for k in ("cleaning_status",) if k in row}
        problems.append(Problem(qid, question, answer, gold, meta))
    return problems


def _checked_fields(where: str, row: dict[str, Any], bare_answers: bool) -> tuple[str, str, float]:
    """(question, answer, gold) of one row, or a UserError naming the row."""
    answer_types: tuple[type, ...] = (str, int, float) if bare_answers else (str,)
    problem = wrong_field(row, {"question": (str,), "answer": answer_types})
    if problem:
        number_answer = isinstance(row.get("answer"), (int, float)) and not bare_answers
        raise UserError(f"{where}: {problem}{' ' + BARE_ANSWERS_HINT if number_answer else ''}")
    question, answer = row["question"], str(row["answer"])
    if not question.strip():
        raise UserError(f"{where}: the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise UserError(f"{where}: the question is {len(question):,} characters long "
                        f"(at most {MAX_QUESTION_CHARS:,}); is the file broken?")
    gold = parse_gold(answer, bare_answers)
    if gold is None:
        raise UserError(f"{where}: no gold answer can be read from {_tail(answer)} "
                        f"(the answer needs a last line '#### N') {'' if bare_answers else BARE_ANSWERS_HINT}".rstrip())
    return question, answer, gold


def _tail(answer: str) -> str:
    text = " ".join(answer.split())
    return repr(text if len(text) <= 40 else "..." + text[-37:])
