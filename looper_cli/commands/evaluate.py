"""`looper eval`, `looper compare`, `looper report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from looper_cli.app import app
from looper_cli.commands.common import (ConfigOption, bare_answers_option, batch_size_option, gpu_memory_option,
                                        kv_cache_option, template_option)


@app.command("eval")
def eval_command(
    checkpoint: Optional[List[str]] = typer.Option(
        None, "--checkpoint", metavar="PATH", help="Adapter folder, model folder, hub id or .gguf file. Repeat to compare.",
        show_default=False),
    base_model: Optional[str] = typer.Option(None, help="Base model under an adapter (default: the one "
                                             "adapter_config.json names).", show_default=False),
    dataset: Optional[str] = typer.Option(None, help="gsm8k, gsm8k-platinum, or a .jsonl file / folder. "
                                          "Default: gsm8k.", show_default=False),
    split: Optional[str] = typer.Option(None, help="Split to evaluate, or a slice: train[-500:]. Default: test.", show_default=False),
    limit: Optional[int] = typer.Option(None, help="Only the first N questions.", show_default=False),
    bare_answers: Optional[bool] = bare_answers_option(),
    samples: Optional[int] = typer.Option(None, help="K sampled completions per question besides the greedy "
                                          "one: maj@K, Regime W vote@K, pass@K. Default: 0.", show_default=False),
    temperature: Optional[float] = typer.Option(None, help="Temperature of the K samples. Default: 0.8.",
                                                show_default=False),
    max_new_tokens: Optional[int] = typer.Option(None, help="Default: 512.", show_default=False),
    batch_size: Optional[int] = batch_size_option(),
    gpu_memory_utilization: Optional[float] = gpu_memory_option(),
    kv_cache_gib: Optional[float] = kv_cache_option(),
    output: Optional[Path] = typer.Option(None, help="Eval folder (several checkpoints: the parent folder). "
                                          "Default: `outputs/eval/<checkpoint>-<dataset>`.", show_default=False),
    engine: Optional[str] = typer.Option(None, help="auto, hf or fast. Default: auto.", show_default=False),
    template: Optional[str] = template_option(),
    bandit: Optional[str] = typer.Option(None, help="Regime W bandit.json (or a run folder) for the vote. "
                                         "Default: the checkpoint's run's bandit.json, else a fresh one.",
                                         show_default=False),
    seed: Optional[int] = typer.Option(None, help="Sampling seed. Default: 0.", show_default=False),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Evaluate checkpoints on GSM8K / GSM8K-Platinum: accuracy (strict, flexible, headline) with 95% CIs.

    Writes examples.jsonl (one row per question, resumable) and summary.json.
    With two checkpoints, also a paired comparison (McNemar, bootstrap CI).

    Example: `looper eval --checkpoint runs/default/dpo --dataset gsm8k-platinum --samples 8`
    """
    from rich.console import Console

    from looper_cli.compare import render_comparison
    from looper_cli.config import resolve
    from looper_cli.evaluate import SECTION, EvalStageConfig, render_summary, run_evals

    cfg = resolve(EvalStageConfig, SECTION, config, checkpoint=checkpoint, base_model=base_model,
                  dataset=dataset, split=split, limit=limit, bare_answers=bare_answers, samples=samples,
                  temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
                  gpu_memory_utilization=gpu_memory_utilization, kv_cache_gib=kv_cache_gib, output=output,
                  engine=engine, template=template, bandit=bandit, seed=seed)
    result = run_evals(cfg)
    console = Console()
    for summary in result["runs"]:
        console.print(render_summary(summary))
        console.print(f"log: {summary['output']}/examples.jsonl")
    for comparison in result["comparisons"]:
        console.print(render_comparison(comparison))


@app.command("compare")
def compare_command(
    eval_a: Optional[Path] = typer.Argument(None, help="Eval folder A (the baseline).", show_default=False),
    eval_b: Optional[Path] = typer.Argument(None, help="Eval folder B (reported as B - A).", show_default=False),
    metric: Optional[str] = typer.Option(None, help="accuracy, strict, flexible, maj, vote or pass. "
                                         "[default: accuracy]", show_default=False),
    bootstrap: Optional[int] = typer.Option(None, help="Paired bootstrap resamples. [default: 10000]",
                                            show_default=False),
    seed: Optional[int] = typer.Option(None, help="Bootstrap seed. [default: 0]", show_default=False),
    output: Optional[Path] = typer.Option(None, help="Also write the result as JSON here.", show_default=False),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Compare two evals on their shared questions: accuracies with Wilson CIs, McNemar, bootstrap CI.

    Example: `looper compare runs/default/eval/sft-gsm8k runs/default/eval/dpo-gsm8k`
    """
    from looper_cli.compare import SECTION, CompareStageConfig, run_compare
    from looper_cli.config import resolve

    cfg = resolve(CompareStageConfig, SECTION, config, eval_a=eval_a, eval_b=eval_b, metric=metric,
                  bootstrap=bootstrap, seed=seed, output=output)
    run_compare(cfg)


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder (`runs/<name>`)."),
    output: Optional[Path] = typer.Option(None, help="Default: RUN_DIR/report.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Plots (PNG) and report.md for a run: accuracy per stage, reward / s_wm by correctness, arm posteriors.

    Example: `looper report runs/default`
    """
    from looper_cli.report import make_report

    written = make_report(run_dir, output)
    if as_json:
        typer.echo(json.dumps(written, indent=2))
    else:
        for path in written["files"]:
            typer.echo(path)
