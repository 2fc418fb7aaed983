"""GSM8K-format problems from a local JSONL file or folder, a hub dataset,
or the built-in synthetic set.

A problem's id is a hash of its question text, so it is the same in GSM8K
test and in Platinum (which re-labels that set) and survives reordering:
paired comparisons and resume both key on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looper_cli.errors import UserError
from looper_cli.jsonl import read_jsonl

# Short names users type, mapped to hub (dataset id, config).
HUB_ALIASES: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "openai/gsm8k": ("openai/gsm8k", "main"),
    "gsm8k-platinum": ("madrylab/gsm8k-platinum", "main"),
    "madrylab/gsm8k-platinum": ("madrylab/gsm8k-platinum", "main"),
}
SYNTHETIC = "synthetic"


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


def parse_gold(answer: str) -> float | None:
    """The gold answer is the `#### N` of the reference solution."""
    from regime_w_core import extract_answer

    found = extract_answer(answer, "strict")
    return None if found is None else found.value


def load_problems(source: str | Path, split: str = "train", limit: int | None = None,
                  seed: int = 0) -> list[Problem]:
    """Problems from `source`: a .jsonl file, a folder holding `<split>.jsonl`,
    `synthetic`, or a hub id (`gsm8k`, `gsm8k-platinum`, `openai/gsm8k`, ...)."""
    text = str(source)
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        from looper_cli.synthetic import synthetic_problems

        n = int(text.split(":", 1)[1]) if ":" in text else (limit or 200)
        rows = synthetic_problems(n, seed=seed, split=split)
    else:
        path = Path(text).expanduser()
        if path.exists():
            rows = _rows_from_path(path, split)
        elif text in HUB_ALIASES or _looks_like_hub_id(text):
            rows = _rows_from_hub(text, split)
        else:
            raise UserError(f"data not found: {text} (give a .jsonl file, a folder, "
                            f"'{SYNTHETIC}', or a hub id such as gsm8k)")
    problems = _to_problems(rows, text)
    if not problems:
        raise UserError(f"no problems in {text} (split {split})")
    return problems[:limit] if limit else problems


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _rows_from_path(path: Path, split: str) -> list[dict[str, Any]]:
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
    return result.rows


def _rows_from_hub(name: str, split: str) -> list[dict[str, Any]]:
    dataset_id, config = HUB_ALIASES.get(name, (name, None))
    try:
        import datasets
    except ImportError:
        raise UserError("loading from the hub needs the 'datasets' package") from None
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:  # network, unknown id, unknown split
        raise UserError(f"could not load {dataset_id} ({split}) from the hub: {err}".splitlines()[0]) from None
    return [dict(r) for r in ds]


def _to_problems(rows: list[dict[str, Any]], source: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for row in rows:
        question, answer = str(row["question"]), str(row["answer"])
        qid = question_id(question)
        if qid in seen:  # a repeated question keeps a distinct, stable id
            seen[qid] += 1
            qid = f"{qid}-{seen[qid]}"
        else:
            seen[qid] = 1
        meta = {k: row[k] for k in ("cleaning_status",) if k in row}
        problems.append(Problem(qid, question, answer, parse_gold(answer), meta))
    return problems
