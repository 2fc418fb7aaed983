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
