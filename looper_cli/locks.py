"""One writer per output: every stage that writes a folder or a file claims it
first. A second run on the same output stops at once with one line naming
the holder, instead of interleaving its rows or checkpoints with the first.

The lock is an advisory `flock` on a hidden sibling (`.NAME.lock` next to the
output, so model folders stay clean); the OS frees it when the holder exits
or is killed, so a crash never leaves a stale lock. The holder writes its pid
and command line into the file for the error message.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from looper_cli.errors import UserError


def lock_path(target: str | Path) -> Path:
    path = Path(target).resolve()
    return path.with_name(f".{path.name}.lock")


def check_output_kind(target: str | Path, folder: bool) -> Path:
    """An output folder must not be an existing file, nor an output file an
    existing folder (either would fail much later, mid-write)."""
    path = Path(target)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"output {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise UserError(f"output {path} is a folder; give a file path")
    return path


@contextmanager
def claim_output(target: str | Path, stage: str, folder: bool) -> Iterator[Path]:
    """Check the output's kind, create its parent, and hold its lock for the
    `with` block."""
    path = check_output_kind(target, folder)
    path.resolve().parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path(path), f"looper {stage}", path):
        yield path


@contextmanager
def exclusive_lock(lock_file: Path, holder: str, target: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{target} is being written by another run ({_holder_of(fd)}); "
                            "wait for it to finish or choose another --output") from None
        _record_holder(fd, holder)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _record_holder(fd: int, holder: str) -> None:
    as_cli = bool(sys.argv) and Path(sys.argv[0]).name in ("looper", "__main__.py")
    command = " ".join(["looper", *sys.argv[1:]]) if as_cli else f"{holder} called from Python"
    text = f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {command[:300]}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8", "replace"), 0)


def _holder_of(fd: int) -> str:
    text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    return text or "a process that is starting"
