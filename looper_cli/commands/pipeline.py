"""`looper pipeline`: the whole post-training run in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from looper_cli.app import app
from looper_cli.commands.common import config_option


@app.command("pipeline")
def pipeline(
    run: Optional[str] = typer.Option(None, help="Run name: everything goes to RUNS_DIR/RUN/. [default: default]",
                                      show_default=False),
    base_model: Optional[str] = typer.Option(
        None, help="Base model (hub id, folder, .gguf). Without one: the built-in tiny model on CPU.",
        show_default=False),
    data: Optional[str] = typer.Option(None, help="Training problems. [default: synthetic without --base-model, "
                                       "else gsm8k]", show_default=False),
    eval_data: Optional[str] = typer.Option(None, help="Evaluation problems (test split). [default: --data]",
                                            show_default=False),
    stages: Optional[str] = typer.Option(None, help="Comma list from sft,rollout,prefs,dpo,ppo,eval. "
                                         "[default: sft,rollout,prefs,dpo,eval]", show_default=False),
    runs_dir: Optional[Path] = typer.Option(None, help="Folder of runs. [default: runs]", show_default=False),
    config: Optional[Path] = config_option(),
) -> None:
    """Run sft -> rollout -> prefs -> dpo -> (ppo) -> eval in one run folder;
    stages whose output exists with an unchanged config are skipped, a cut-off
    stage resumes. With no arguments: the built-in default on CPU (tiny model,
    synthetic problems) in about a minute.

    Example: `looper pipeline --config configs/abel-7b.toml --run abel --stages sft,rollout,prefs,dpo,eval`
    """
    from looper_cli.config import resolve
    from looper_cli.pipeline import SECTION, PipelineConfig, run_pipeline

    cfg = resolve(PipelineConfig, SECTION, config, run=run, base_model=base_model, data=data,
                  eval_data=eval_data, stages=stages, runs_dir=runs_dir, config=config)
    run_pipeline(cfg)
