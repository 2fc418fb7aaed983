"""Files that survive kills: append-with-flush JSONL, atomic replace, and
tolerant reading that counts (never trusts) damaged lines.

Every stage's output goes through here, so "work already written is never
lost or corrupted" has one home.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

# Expected JSON types of a row's fields, by name: {"question": (str,), "gold": (int, float, type(None))}.
FieldTypes = dict[str, tuple[type, ...]]


@dataclass
class ReadResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    lines: list[int] = field(default_factory=list)  # the line number of each row, for messages


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> ReadResult:
    """Read every parseable JSON object; a line that is truncated, not JSON,
    not an object, or missing a required key is recorded in `bad_lines`.
    A UTF-8 byte-order mark (what some editors put first) is not damage."""
    result = ReadResult()
    p = Path(path)
    if not p.exists():
        return result
    need = tuple(required)
    with p.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            row = _parse_line(raw)
            if row is None or any(k not in row for k in need):
                result.bad_lines.append(number)
            else:
                result.rows.append(row)
                result.lines.append(number)
    return result


def wrong_field(row: dict[str, Any], types: FieldTypes) -> str | None:
    """What is wrong with the first field of `row` whose JSON type is not one
    of `types` (a missing field is not checked here), or None."""
    for name, allowed in types.items():
        value = row.get(name)
        if name in row and not _has_type(value, allowed):
            return f"field '{name}' must be {' or '.join(map(_type_name, allowed))}, not {_value_name(value)}"
    return None


def _has_type(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true/false is no number, though Python says bool is an int
        return bool in allowed
    return isinstance(value, allowed)


def _type_name(kind: type) -> str:
    return {str: "text", int: "a number", float: "a number", bool: "true or false",
            type(None): "null", list: "a list", dict: "an object"}.get(kind, kind.__name__)


def _value_name(value: Any) -> str:
    return "null" if value is None else f"{_type_name(type(value))} ({json.dumps(value)[:40]})"


def require_field_types(result: ReadResult, path: str | Path, types: FieldTypes) -> None:
    """A row with a field of the wrong type is refused, naming the line and
    the field: coercing it (null -> "None") would be a silent wrong result."""
    from looper_cli.errors import UserError

    for row, line in zip(result.rows, result.lines):
        problem = wrong_field(row, types)
        if problem:
            raise UserError(f"{path} line {line}: {problem}")


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None  # a line cut by a kill: never trust it, even if it parses
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    yield from read_jsonl(path).rows


class JsonlAppender:
    """Append rows, flushing each one so a kill loses at most the row being
    written. A partial last line left by an earlier kill is cut first, so new
    rows never glue onto it."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_partial_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_partial_tail(path: Path) -> int:
    """Drop bytes after the last newline (a line cut mid-write). Returns the
    number of bytes dropped."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return 0
        keep = _last_newline_end(fh, size)
        fh.truncate(keep)
        return size - keep


def _last_newline_end(fh: Any, size: int) -> int:
    block = 1 << 16
    pos = size
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        chunk = fh.read(pos - start)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        pos = start
    return 0


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary sibling, fsync, then rename into place: readers
    see the old file or the new one, never half of one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not also keep half a copy
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
