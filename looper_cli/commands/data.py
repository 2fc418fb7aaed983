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
) -> None:
    """Build a tiny random-initialised Llama with a BPE tokenizer trained on the
    problems (seconds on CPU). Used by the tests and the built-in default run.

    Example: `looper tiny runs/tiny --data ../shared/data/gsm8k --limit 300`
    """
    from looper_cli.data import load_problems
    from looper_cli.tiny import TinyConfig, build_tiny_model

    problems = load_problems(data, split="train", limit=limit, seed=seed)
    path = build_tiny_model(out, [p.question + "\n" + p.answer for p in problems], TinyConfig(seed=seed))
    typer.echo(f"tiny model written to {path}")
