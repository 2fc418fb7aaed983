"""User-facing errors: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


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
