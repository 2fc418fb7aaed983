"""`looper rollout`, `looper score`, `looper prefs`: sampled solutions, Regime W
scores, preference pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from looper_cli.app import app
from looper_cli.commands.common import (bare_answers_option, batch_size_option, config_option, gpu_memory_option,
                                        gpus_option, kv_cache_option, template_option)


@app.command("rollout")
def rollout(
    base_model: Optional[str] = typer.Option(None, help="Base model: hub id, folder or .gguf file.",
                                             show_default=False),
    adapter: Optional[Path] = typer.Option(None, help="LoRA adapter folder to apply.", show_default=False),
    data: Optional[str] = typer.Option(None, help="Problems: .jsonl, folder, 'synthetic' or hub id. [default: gsm8k]",
                                       show_default=False),
    split: Optional[str] = typer.Option(None, help="Split, or a slice: train[:1000]. [default: train]", show_default=False),
    limit: Optional[int] = typer.Option(None, help="Only the first N questions.", show_default=False),
    bare_answers: Optional[bool] = bare_answers_option(),
    samples: Optional[int] = typer.Option(None, help="Solutions per question (K). [default: 8]", show_default=False),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature. [default: 0.8]",
                                                show_default=False),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling. [default: 1.0]", show_default=False),
    max_new_tokens: Optional[int] = typer.Option(None, help="Tokens per solution. [default: 512]",
                                                 show_default=False),
    batch_size: Optional[int] = batch_size_option(),
    gpu_memory_utilization: Optional[float] = gpu_memory_option(),
    kv_cache_gib: Optional[float] = kv_cache_option(),
    gpus: Optional[int] = gpus_option("1 if a GPU is present; each GPU runs one worker process"),
    workers: Optional[int] = typer.Option(None, help="CPU worker processes (no GPU).", show_default=False),
    output: Optional[Path] = typer.Option(None, help="Rollouts file. [default: runs/default/rollouts.jsonl]",
                                          show_default=False),
    seed: Optional[int] = typer.Option(None, help="Sampling seed. [default: 0]", show_default=False),
    engine: Optional[str] = typer.Option(None, help="Generation engine: auto, hf or fast. [default: auto]",
                                         show_default=False),
    template: Optional[str] = template_option(),
    config: Optional[Path] = config_option(),
) -> None:
    """Sample K solutions per question, stream them to disk, score them with
    Regime W (bandit state in bandit.json next to the output) and write the
    scored rollouts. Rerunning the same command resumes after a kill.

    Example: `looper rollout --base-model Qwen/Qwen2.5-0.5B-Instruct --adapter runs/a/sft --data gsm8k --limit 500 --samples 8 --gpus 8 --output runs/a/rollouts.jsonl`
    """
    from looper_cli.config import resolve
    from looper_cli.rollout import SECTION, RolloutStageConfig, run_rollout

    cfg = resolve(RolloutStageConfig, SECTION, config, base_model=base_model, adapter=adapter, data=data,
                  split=split, limit=limit, bare_answers=bare_answers, samples=samples, temperature=temperature,
                  top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                  gpu_memory_utilization=gpu_memory_utilization, kv_cache_gib=kv_cache_gib, gpus=gpus, workers=workers,
                  output=output, seed=seed, engine=engine, template=template)
    run_rollout(cfg)


@app.command("score")
def score(
    rollouts: Optional[Path] = typer.Argument(None, help="Rollouts file (one row per solution; unscored rows "
                                              "are fine).", show_default=False),
    output: Optional[Path] = typer.Option(None, help="Scored file. [default: rewrite ROLLOUTS in place]",
                                          show_default=False),
    alpha: Optional[float] = typer.Option(None, help="Reward weight of correctness. [default: 1.0]",
                                          show_default=False),
    beta: Optional[float] = typer.Option(None, help="Reward weight of Regime W coherence (s_wm). [default: 0.5]",
                                         show_default=False),
    gamma: Optional[float] = typer.Option(None, help="Reward weight of the length penalty. [default: 0.1]",
                                          show_default=False),
    learn: Optional[bool] = typer.Option(None, "--learn/--no-learn", help="Update and save the bandit "
                                         "(bandit.json next to ROLLOUTS) from groups with known gold that it has "
                                         "not learned from yet. [default: learn]", show_default=False),
    drop_damaged: Optional[bool] = typer.Option(None, "--drop-damaged", help="Rescoring in place drops lines "
                                                "that cannot be read (refused without this).", show_default=False),
    config: Optional[Path] = config_option(),
) -> None:
    """(Re)score a rollouts file with Regime W: answers, s_end, s_path, s_cf,
    s_wm, arm and reward per solution; written atomically. The bandit learns
    from each group once, however often the file is rescored.

    Example: `looper score runs/a/rollouts.jsonl --output runs/a/rescored.jsonl --beta 1.0`
    """
    from looper_cli.config import resolve
    from looper_cli.rollout import SCORE_SECTION, ScoreStageConfig, run_score

    cfg = resolve(ScoreStageConfig, SCORE_SECTION, config, rollouts=rollouts, output=output, alpha=alpha,
                  beta=beta, gamma=gamma, learn=learn, drop_damaged=drop_damaged)
    run_score(cfg)


@app.command("prefs")
def prefs(
    rollouts: Path = typer.Argument(..., help="Scored rollouts file."),
    output: Optional[Path] = typer.Option(None, help="Pairs file. [default: prefs.jsonl next to ROLLOUTS]",
                                          show_default=False),
    coherence_threshold: Optional[float] = typer.Option(
        None, help="Least s_wm gap for a coherence pair. [default: 0.01]", show_default=False),
    max_per_question: Optional[int] = typer.Option(None, help="Most pairs per question and kind. [default: 4]",
                                                   show_default=False),
    max_pairs: Optional[int] = typer.Option(None, help="Most pairs in total (spread over questions).",
                                            show_default=False),
    kinds: Optional[str] = typer.Option(None, help="Comma list: correctness,coherence. [default: both]",
                                        show_default=False),
    config: Optional[Path] = config_option(),
) -> None:
    """Build DPO preference pairs (prompt, chosen, rejected) from scored
    rollouts: correct over incorrect, and more over less coherent among
    correct solutions. Prints counts by kind and chosen-vs-rejected lengths.

    Example: `looper prefs runs/a/rollouts.jsonl --output runs/a/prefs.jsonl --max-per-question 4 --kinds correctness,coherence`
    """
    from looper_cli.config import resolve
    from looper_cli.prefs import SECTION, PrefsStageConfig, run_prefs

    cfg = resolve(PrefsStageConfig, SECTION, config, rollouts=rollouts, output=output,
                  coherence_threshold=coherence_threshold, max_per_question=max_per_question,
                  max_pairs=max_pairs, kinds=kinds)
    run_prefs(cfg)
