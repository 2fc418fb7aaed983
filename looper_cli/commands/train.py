"""`looper sft`, `looper dpo`, `looper ppo`, `looper merge`: the training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from looper_cli.app import app
from looper_cli.commands.common import (bare_answers_option, config_option, gpu_memory_option, gpus_option,
                                        kv_cache_option)

# Options the three training stages share, defined once.
_RUN = typer.Option(None, "--run", help="Run name: output goes to checkpoints/RUN/STAGE. Default: default.",
                    show_default=False)
_OUTPUT = typer.Option(None, "--output", "-o", help="Output folder (overrides --run).", show_default=False)
_EPOCHS = typer.Option(None, "--epochs", help="Passes over the data. Default: 1.", show_default=False)
_MAX_STEPS = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs).",
                          show_default=False)
_LR = typer.Option(None, "--lr", help="Learning rate.", show_default=False)
_BATCH = typer.Option(None, "--batch-size", help="Examples per GPU per step.", show_default=False)
_ACCUM = typer.Option(None, "--grad-accum", help="Gradient accumulation steps. Default: 1.", show_default=False)
_MAXLEN = typer.Option(None, "--max-length", help="Longest prompt+answer in tokens. Default: 1024.",
                       show_default=False)
_TEMPLATE = typer.Option(None, "--template", help="Prompt format: chat (tutoring chat template) or plain. "
                         "Default: what the starting checkpoint was trained with, else chat.", show_default=False)
_LIMIT = typer.Option(None, "--limit", help="Use only the first N examples.", show_default=False)
_SPLIT = typer.Option(None, "--split", help="Split to train on, or a slice of it that leaves a held-out "
                      "part: train[:-500]. Default: train.", show_default=False)
_SEED = typer.Option(None, "--seed", help="Random seed. Default: 0.", show_default=False)
_SAVE_STEPS = typer.Option(None, "--save-steps", help="Checkpoint every N steps (what --resume restarts from). "
                           "Default: 50.", show_default=False)
_SAVE_LIMIT = typer.Option(None, "--save-total-limit", help="Checkpoints kept (older ones are deleted). "
                           "Default: 2.", show_default=False)
_RESUME = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in the output "
                       "folder (global step, optimizer and scheduler state restored).", show_default=False)
_ACC_CFG = typer.Option(None, "--accelerate-config", help="accelerate config file (FSDP / DeepSpeed settings) "
                        "for multi-GPU runs.", show_default=False)
_REPORT = typer.Option(None, "--report-to", help="Also log to: none, tensorboard or wandb.", show_default=False)
_CKPT = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations "
                     "in the backward pass (less memory, ~30% slower). Default: on with a GPU.", show_default=False)
_LIGER = typer.Option(None, "--liger/--no-liger", help="Liger's fused kernels (RMSNorm, RoPE, SwiGLU, linear + "
                      "cross-entropy): faster and leaner on GPU. Needs `pip install liger-kernel`.",
                      show_default=False)
_COMPILE = typer.Option(None, "--compile/--no-compile", help="torch.compile each decoder "
                        "layer (GPU; the first step compiles for a minute). Turns recomputation over to the "
                        "compiler (--activation-budget) and replaces --liger. 8B LoRA on an H100: ~2x the "
                        "checkpointed default.", show_default=False)
_ACT_BUDGET = typer.Option(None, "--activation-budget", help="With --compile: the share of activations kept for "
                           "the backward pass (the compiler recomputes the cheapest rest). Default: 0.8.",
                           show_default=False)
_FULL = typer.Option(None, "--full/--lora", help="Full fine-tune instead of a LoRA adapter.", show_default=False)
_LORA_R = typer.Option(None, "--lora-r", help="LoRA rank. Default: 16.", show_default=False)
_LORA_ALPHA = typer.Option(None, "--lora-alpha", help="LoRA alpha. Default: 32.", show_default=False)
_LORA_TARGETS = typer.Option(None, "--lora-targets", help="Modules LoRA adapts: all-linear or a comma list "
                             "(q_proj,v_proj).", show_default=False)
_BASE = typer.Option(None, "--base-model", help="Base model: hub id, local folder or .gguf file "
                     "(default: the one the adapter names).", show_default=False)


def _run_stage(section: str, config_cls: Any, stage: Any, config: Optional[Path], **options: Any) -> None:
    """Resolve the config, relaunch under accelerate for --gpus N > 1, run."""
    from looper_cli.config import resolve
    from looper_cli.launch import maybe_relaunch

    cfg = resolve(config_cls, section, config, **options)
    if hasattr(cfg, "gpus"):
        maybe_relaunch(cfg.gpus, cfg.accelerate_config)
    stage(cfg)


@app.command("sft")
def sft(
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model: hub id, local folder or "
                                             ".gguf file.", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help="Training problems: gsm8k, a .jsonl file/folder, "
                                       "or synthetic[:N]. Default: gsm8k.", show_default=False),
    full: Optional[bool] = _FULL, lora_r: Optional[int] = _LORA_R, lora_alpha: Optional[int] = _LORA_ALPHA,
    lora_targets: Optional[str] = _LORA_TARGETS,
    epochs: Optional[float] = _EPOCHS, max_steps: Optional[int] = _MAX_STEPS, lr: Optional[float] = _LR,
    batch_size: Optional[int] = _BATCH, grad_accum: Optional[int] = _ACCUM, max_length: Optional[int] = _MAXLEN,
    template: Optional[str] = _TEMPLATE, split: Optional[str] = _SPLIT, limit: Optional[int] = _LIMIT,
    seed: Optional[int] = _SEED,
    save_steps: Optional[int] = _SAVE_STEPS, save_total_limit: Optional[int] = _SAVE_LIMIT,
    resume: Optional[bool] = _RESUME,
    run: Optional[str] = _RUN, output: Optional[Path] = _OUTPUT,
    gpus: Optional[int] = gpus_option(), accelerate_config: Optional[Path] = _ACC_CFG,
    report_to: Optional[str] = _REPORT, gradient_checkpointing: Optional[bool] = _CKPT,
    liger: Optional[bool] = _LIGER, compile_layers: Optional[bool] = _COMPILE,
    activation_budget: Optional[float] = _ACT_BUDGET, config: Optional[Path] = config_option(),
) -> None:
    """Supervised fine-tuning (TRL SFTTrainer): LoRA by default, loss on the answer only.

    Saves the adapter (or full model with `--full`), tokenizer, config.toml and
    summary.json to `checkpoints/RUN/sft`. A killed run continues with `--resume`.

    Example: `looper sft --base-model GAIR/Abel-7B-002 --data gsm8k --epochs 2 --gpus 8 --run abel`
    """
    options = _without(locals(), "config")  # the options, before any import adds names
    from looper_cli.sft import SECTION, SFTStageConfig, run_sft

    _run_stage(SECTION, SFTStageConfig, run_sft, config, **options)


@app.command("dpo")
def dpo(
    sft: Optional[Path] = typer.Option(None, "--sft", help="SFT output folder (adapter or full model).",
                                       show_default=False),
    prefs: Optional[Path] = typer.Option(None, "--prefs", help="Preference pairs JSONL (from `looper prefs`).",
                                         show_default=False),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO beta (KL strength). Default: 0.1.",
                                         show_default=False),
    loss: Optional[str] = typer.Option(None, "--loss", help="sigmoid (DPO) or rpo (DPO + NLL of the chosen "
                                       "answer).", show_default=False),
    rpo_alpha: Optional[float] = typer.Option(None, "--rpo-alpha", help="Weight of the NLL term with --loss "
                                              "rpo. Default: 1.0.", show_default=False),
    length_normalize: Optional[bool] = typer.Option(None, "--length-normalize/--no-length-normalize",
                                                    help="Average log-ratios per token (TRL sigmoid_norm).",
                                                    show_default=False),
    base_model: Optional[str] = _BASE, full: Optional[bool] = _FULL, lora_r: Optional[int] = _LORA_R,
    lora_alpha: Optional[int] = _LORA_ALPHA, lora_targets: Optional[str] = _LORA_TARGETS,
    epochs: Optional[float] = _EPOCHS, max_steps: Optional[int] = _MAX_STEPS, lr: Optional[float] = _LR,
    batch_size: Optional[int] = _BATCH, grad_accum: Optional[int] = _ACCUM, max_length: Optional[int] = _MAXLEN,
    limit: Optional[int] = _LIMIT, seed: Optional[int] = _SEED,
    save_steps: Optional[int] = _SAVE_STEPS, save_total_limit: Optional[int] = _SAVE_LIMIT,
    resume: Optional[bool] = _RESUME,
    run: Optional[str] = _RUN, output: Optional[Path] = _OUTPUT,
    gpus: Optional[int] = gpus_option(), accelerate_config: Optional[Path] = _ACC_CFG,
    report_to: Optional[str] = _REPORT, gradient_checkpointing: Optional[bool] = _CKPT,
    liger: Optional[bool] = _LIGER, compile_layers: Optional[bool] = _COMPILE,
    activation_budget: Optional[float] = _ACT_BUDGET, config: Optional[Path] = config_option(),
) -> None:
    """Direct preference optimisation (TRL DPOTrainer) of the SFT adapter on Regime W pairs.

    The reference is a frozen copy of the SFT adapter (not the bare base model).

    Example: `looper dpo --sft checkpoints/abel/sft --prefs runs/abel/prefs.jsonl --beta 0.1 --run abel`
    """
    options = _without(locals(), "config")  # the options, before any import adds names
    from looper_cli.dpo import SECTION, DPOStageConfig, run_dpo

    _run_stage(SECTION, DPOStageConfig, run_dpo, config, **options)


@app.command("ppo")
def ppo(
    sft: Optional[Path] = typer.Option(None, "--sft", help="Start from this SFT output.", show_default=False),
    dpo: Optional[Path] = typer.Option(None, "--dpo", help="Or start from this DPO output.", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help="Prompts: gsm8k, a .jsonl file/folder, or "
                                       "synthetic[:N]. Default: gsm8k.", show_default=False),
    bare_answers: Optional[bool] = bare_answers_option(),
    algo: Optional[str] = typer.Option(None, "--algo", help="grpo (group-mean baseline) or rloo (leave-one-out)."
                                       " Default: grpo.", show_default=False),
    num_generations: Optional[int] = typer.Option(None, "--num-generations", help="Answers sampled per prompt "
                                                  "(one Regime W group). Default: 8.", show_default=False),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Longest sampled answer. "
                                                 "Default: 256.", show_default=False),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature. Default: 1.0.",
                                                show_default=False),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Reward weight of correctness. Default: 1.0.",
                                          show_default=False),
    beta: Optional[float] = typer.Option(None, "--beta", help="Reward weight of Regime W coherence (s_wm). "
                                         "Default: 0.5.", show_default=False),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Reward weight of the length penalty. "
                                          "Default: 0.1.", show_default=False),
    kl_beta: Optional[float] = typer.Option(None, "--kl-beta", help="KL penalty to the starting policy. "
                                            "Default: 0.", show_default=False),
    clip_epsilon: Optional[float] = typer.Option(None, "--clip-epsilon", help="PPO ratio clip. Default: 0.2.",
                                                 show_default=False),
    steps_per_generation: Optional[int] = typer.Option(None, "--steps-per-generation", help="Optimizer steps "
                                                       "one generation phase feeds: 1 samples fresh for every "
                                                       "step (on-policy); N samples N steps' answers at once, "
                                                       "and later steps train on them with PPO's clipped ratio. "
                                                       "Default: 1.", show_default=False),
    coherence_arm: Optional[str] = typer.Option(None, "--coherence-arm", help="Regime W arm whose s_wm the "
                                                "reward uses in every group (W1..M4, e.g. M1: soundness, no "
                                                "agreement term). Default: the bandit's pick.", show_default=False),
    shaping: Optional[str] = typer.Option(None, "--shaping", help="Which answers the coherence and length "
                                          "terms reward: all (the spec's reward) or correct (wrong answers "
                                          "earn 0; an experiment). Default: all.", show_default=False),
    bandit_state: Optional[Path] = typer.Option(None, "--bandit-state", help="Start the arm bandit from this "
                                                "bandit.json (e.g. the rollouts').", show_default=False),
    attn_implementation: Optional[str] = typer.Option(None, "--attn-implementation", help="The policy's "
                                                      "attention: sdpa (the model's default) or eager.",
                                                      show_default=False),
    engine: Optional[str] = typer.Option(None, "--engine", help="Sampling engine: auto (fast for Llama-family "
                                         "models on CUDA, else hf), fast (the paged engine, in-process on the live "
                                         "LoRA weights) or hf (transformers generate, any model).",
                                         show_default=False),
    gpu_memory_utilization: Optional[float] = gpu_memory_option(),
    kv_cache_gib: Optional[float] = kv_cache_option(),
    max_seqs: Optional[int] = typer.Option(None, "--max-seqs", help="Sequences the engine decodes together. "
                                           "Default: 256.", show_default=False),
    keep_engine_memory: Optional[bool] = typer.Option(
        None, "--keep-engine-memory/--release-engine-memory", help="Keep the engine's KV cache and CUDA graphs "
        "between steps (the cache holds one step's rows) or give that memory to the training step at "
        "each step (graphs are then captured again). Default: keep.", show_default=False),
    base_model: Optional[str] = _BASE, full: Optional[bool] = _FULL, lora_r: Optional[int] = _LORA_R,
    lora_alpha: Optional[int] = _LORA_ALPHA, lora_targets: Optional[str] = _LORA_TARGETS,
    epochs: Optional[float] = _EPOCHS, max_steps: Optional[int] = _MAX_STEPS, lr: Optional[float] = _LR,
    batch_size: Optional[int] = _BATCH, grad_accum: Optional[int] = _ACCUM,
    template: Optional[str] = _TEMPLATE, split: Optional[str] = _SPLIT, limit: Optional[int] = _LIMIT,
    seed: Optional[int] = _SEED,
    save_steps: Optional[int] = _SAVE_STEPS, save_total_limit: Optional[int] = _SAVE_LIMIT,
    resume: Optional[bool] = _RESUME,
    run: Optional[str] = _RUN, output: Optional[Path] = _OUTPUT,
    gpus: Optional[int] = gpus_option(), accelerate_config: Optional[Path] = _ACC_CFG,
    report_to: Optional[str] = _REPORT, gradient_checkpointing: Optional[bool] = _CKPT,
    liger: Optional[bool] = _LIGER, compile_layers: Optional[bool] = _COMPILE,
    activation_budget: Optional[float] = _ACT_BUDGET, config: Optional[Path] = config_option(),
) -> None:
    """On-policy RL with the Regime W reward: PPO's clipped objective with group-relative advantages.

    There is no value model (TRL >= 1.13 has no value-model PPO trainer): each
    prompt gets `--num-generations` sampled answers, Regime W scores the group,
    `reward = alpha * correct + beta * s_wm - gamma * length_penalty`, and TRL's
    GRPOTrainer (or RLOOTrainer with `--algo rloo`) takes the clipped policy step.
    The K answers of a prompt are sampled together by `--engine`, in this process,
    on the weights the last step updated. The arm bandit's state is kept in
    bandit.json next to the output.

    Example: `looper ppo --sft checkpoints/r1/sft --data gsm8k --num-generations 8 --gpus 8 --run r1`
    """
    options = _without(locals(), "config")  # the options, before any import adds names
    from looper_cli.ppo import SECTION, PPOStageConfig, run_ppo

    _run_stage(SECTION, PPOStageConfig, run_ppo, config, **options)


@app.command("merge")
def merge(
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter folder.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the merged model.",
                                          show_default=False),
    base_model: Optional[str] = _BASE,
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bfloat16, float16 or float32.",
                                        show_default=False),
    config: Optional[Path] = config_option(),
) -> None:
    """Merge a LoRA adapter into its base model and save a plain transformers checkpoint + tokenizer.

    Example: `looper merge --adapter checkpoints/abel/dpo --output checkpoints/abel/merged`
    """
    options = _without(locals(), "config")  # the options, before any import adds names
    from looper_cli.merge import SECTION, MergeStageConfig, run_merge

    _run_stage(SECTION, MergeStageConfig, run_merge, config, **options)


def _without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in names}
