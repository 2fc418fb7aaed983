"""Entry point: `looper`. Assembles the commands and turns user errors into
one line on stderr with exit code 2."""

from __future__ import annotations

import sys

import typer

from looper_cli import __version__
from looper_cli.app import app
from looper_cli.errors import EXIT_USER_ERROR, UserError, environment_error_message

# Registration by import: each module adds its commands to `app`.
from looper_cli.commands import data as _data  # noqa: F401,E402
from looper_cli.commands import train as _train  # noqa: F401,E402
from looper_cli.commands import rollout as _rollout  # noqa: F401,E402
from looper_cli.commands import evaluate as _evaluate  # noqa: F401,E402
from looper_cli.commands import pipeline as _pipeline  # noqa: F401,E402


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"looper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """looper: post-training for grade-school math with the Regime W signal."""


def main() -> None:
    """Run the CLI. Usage errors exit 2 (click's own convention); a
    `UserError` raised by a stage prints one line and exits 2 too, and so
    does what the machine refused (a full disk, memory): finished work is on
    disk either way. Anything else is a bug and keeps its traceback."""
    try:
        app()
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted; finished work is on disk and the stage resumes where it stopped", code=130)
    except Exception as err:
        message = environment_error_message(err)
        if message is None:
            raise
        _fail(message)


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    sys.stderr.write(f"looper: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)
