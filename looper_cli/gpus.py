"""GPU counts: checking what the user asked for against the machine."""

from __future__ import annotations

from looper_cli.errors import UserError


def available_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(requested: int) -> int:
    """`requested` GPUs, or a clear error if the machine has fewer. 0 means CPU."""
    if requested < 0:
        raise UserError(f"--gpus must be 0 or more, not {requested}")
    if requested == 0:
        return 0
    have = available_gpus()
    if requested > have:
        raise UserError(f"--gpus {requested} asked for, but this machine has {have} GPU(s)")
    return requested
