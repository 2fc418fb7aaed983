"""`looper tiny`: build the tiny test model."""

from __future__ import annotations

from pathlib import Path

import typer

from looper_cli.app import app


@app.command("tiny")
def tiny(
    out: Path = typer.Argument(..., help="Folder to write the model and tokenizer to."),
    data: str = typer.Option("synthetic", help="Problems to train the tokenizer on (path, hub id or 'synthetic')."),
    limit: int = typer.Option(500, help="How many problems to train the tokenizer on."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it already holds files."),
) -> None:
    """Build a tiny random-initialised Llama with a BPE tokenizer trained on the
    problems (seconds on CPU). Used by the tests and the built-in default run.

    Example: `looper tiny runs/tiny --data ../shared/data/gsm8k --limit 300`
    """
    from looper_cli.tiny import run_tiny

    path = run_tiny(out, data, limit, seed, force)
    typer.echo(f"tiny model written to {path}")
