"""Options several commands share, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

ConfigOption = typer.Option(
    None, "--config", "-c", help="TOML file with options for this stage ([stage] table). The command line wins.",
    show_default=False,
)


def config_option() -> Optional[Path]:
    return ConfigOption


def gpus_option(default_help: str = "1 if a GPU is present, else 0 (CPU)") -> Optional[int]:
    return typer.Option(None, "--gpus", help=f"GPUs to use, data-parallel. Default: {default_help}.",
                        show_default=False)


def batch_size_option() -> Optional[int]:
    return typer.Option(None, help="Sequences in flight per GPU (rows decoded together; the engine refills a row "
                        "as soon as its sequence ends; at least one question's samples). [default: 256]",
                        show_default=False)


def gpu_memory_option() -> Optional[float]:
    return typer.Option(None, help="Share of each GPU the process may fill, weights included; the KV cache gets "
                        "what is left. [default: 0.9]", show_default=False)


def kv_cache_option() -> Optional[float]:
    return typer.Option(None, help="KV cache size in GiB (instead of sizing it from free GPU memory).",
                        show_default=False)


def bare_answers_option() -> Optional[bool]:
    return typer.Option(None, "--bare-answers/--no-bare-answers", help="Accept gold answers without a "
                        "`#### N` line, read as if they were that line (`18`, `1,234`). Default: off, such a "
                        "row is an error naming it.", show_default=False)


def template_option() -> Optional[str]:
    return typer.Option(None, "--template", help="Prompt format: chat or plain. Default: the one the "
                        "checkpoint was trained with (its config.toml), else chat.", show_default=False)
