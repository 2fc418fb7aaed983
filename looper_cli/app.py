"""The Typer application object; command modules register on it.

Kept import-light (typer only) so `looper --help` answers fast: torch,
transformers and trl are imported inside the stages.
"""

import typer

app = typer.Typer(
    name="looper",
    help=(
        "Post-train language models for grade-school math: SFT, sampled rollouts "
        "scored by Regime W, preference pairs, DPO / GRPO-style PPO, and evaluation "
        "on GSM8K and GSM8K-Platinum."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
