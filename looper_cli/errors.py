"""User-facing errors: one clear line and exit code 2, never a traceback.

The `require_*` helpers are the one home of option validation: every stage
checks its numbers through them, so the same mistake reads the same way in
every command.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Optional

EXIT_USER_ERROR = 2
KEPT = "finished work is kept: rerun the same command to resume"


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option, missing file)."""


def require_file(path: str | Path, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


def require_dir(path: str | Path, what: str = "directory") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} not found: {p}")
    return p


def require_positive(option: str, value: Any) -> None:
    """`value` > 0 (None = not given). `not value > 0` also refuses NaN."""
    if value is not None and not value > 0:
        raise UserError(f"{option} must be above 0, not {value}")


def require_at_least(option: str, value: Any, low: float) -> None:
    """`value` >= `low` (None = not given)."""
    if value is not None and not value >= low:
        raise UserError(f"{option} must be {low:g} or more, not {value}")


def require_counts(counts: dict[str, Any]) -> None:
    """Each of {option: value} is 1 or more (None = not given): sizes, steps, limits."""
    for option, value in counts.items():
        require_at_least(option, value, 1)


def require_sampling(temperature: float, top_p: float) -> None:
    """Sampling settings rollout and eval share (temperature 0 = greedy)."""
    require_at_least("--temperature", temperature, 0)
    require_between("--top-p", top_p, 0, 1, low_open=True)


def require_between(option: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    """`value` in [low, high], or (low, high] with `low_open`."""
    if value is None:
        return
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):
        bracket = "(" if low_open else "["
        raise UserError(f"{option} must be in {bracket}{low:g}, {high:g}], not {value}")


def environment_error_message(err: BaseException) -> Optional[str]:
    """One line for what the machine, not the code, refused: a full disk, a
    read-only or forbidden path, memory. None for anything else (a bug,
    which keeps its traceback)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({err.strerror}); {KEPT} once there is space"
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot use {err.filename or 'a file'}: {err.strerror}"
    if "No space left on device" in str(err):  # torch / safetensors wrap ENOSPC in their own errors
        return f"the disk is full (No space left on device); {KEPT} once there is space"
    if type(err).__name__ == "OutOfMemoryError":  # torch's, without importing torch
        return ("out of GPU memory: lower --batch-size (or --max-new-tokens / --max-length); " + KEPT)
    if isinstance(err, MemoryError):
        return "out of memory: lower --batch-size or --limit; " + KEPT
    return None
