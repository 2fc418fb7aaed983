"""On-policy RL with the Regime W reward: PPO's clipped surrogate objective
with group-relative advantages (no value model), through TRL's GRPOTrainer,
or RLOOTrainer with `algo = "rloo"` (leave-one-out baselines).

For each prompt the policy samples `num_generations` answers, together, with
a looper engine running in this process on the live weights
(looper_cli.ppo_rollout: hook, groups, log-probs, memory); the group is
scored by the compiled Regime W core (looper_cli.scoring.score_groups) and
rewarded by the public formula in looper_cli.reward. The bandit that picks
the coherence arm learns as training goes and its state is kept in
bandit.json (in the output folder and in every checkpoint, so a resumed run
carries on from the state its checkpoint saw).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from looper_cli import training
from looper_cli.data import Problem, load_problems
from looper_cli.prompts import Template, resolve_template
from looper_cli.errors import UserError, require_at_least, require_positive
from looper_cli.scoring import require_arm
from looper_cli.training import LoraOptions, TrainOptions

SECTION = "ppo"


@dataclass
class PPOStageConfig(LoraOptions, TrainOptions):
    sft: Optional[Path] = None  # start from the SFT output ...
    dpo: Optional[Path] = None  # ... or from the DPO output
    base_model: Optional[str] = None
    data: str = "gsm8k"
    split: str = "train"
    bare_answers: bool = False  # accept answers without '#### N' (read as that line)
    algo: Literal["grpo", "rloo"] = "grpo"
    num_generations: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    alpha: float = 1.0  # reward weight: correctness
    beta: float = 0.5  # reward weight: Regime W coherence (s_wm)
    gamma: float = 0.1  # reward weight: length penalty
    kl_beta: float = 0.0  # KL to the starting policy (0 = no reference model)
    clip_epsilon: float = 0.2  # PPO ratio clip
    bandit_state: Optional[Path] = None  # initial bandit.json (e.g. from rollouts)
    # The Regime W arm whose s_wm the reward uses in every group (W1..M4), instead
    # of the bandit's pick. M1 (s_cf) pays nothing for agreement, which a policy
    # can buy by collapsing its samples (issue 16's study).
    coherence_arm: Optional[str] = None
    # "all" is the spec's reward. "correct" applies the beta and gamma terms to
    # correct solutions only (an experiment: issue 16 found the spec's reward
    # gamed by short, agreeing, wrong answers). See looper_cli/reward.py.
    shaping: Literal["all", "correct"] = "all"
    lr: float = 1e-5
    batch_size: int = 8  # completions per device per step
    # Optimizer steps one generation phase feeds. 1: every step samples from the
    # policy it trains (on-policy). N: one phase samples N steps' completions at
    # once (a decode step costs about the same for 4x the rows), and steps 2..N
    # train on samples of an older policy, PPO's clipped ratio against the
    # log-probs TRL takes when they are sampled (TRL's steps_per_generation).
    steps_per_generation: int = 1
    # The policy's attention while it trains and samples: None keeps the model's
    # (sdpa). "eager" never returns NaN for the fully masked rows of left padding.
    attn_implementation: Optional[Literal["sdpa", "eager"]] = None
    # Sampling (EngineConfig's fields): fast = the paged engine (Llama family), hf =
    # transformers generate (any model); auto = fast for Llama-family models on CUDA.
    engine: Literal["auto", "hf", "fast"] = "auto"
    gpu_memory_utilization: float = 0.9  # share of the whole GPU (trainer included) the engine may fill
    kv_cache_gib: Optional[float] = None  # an explicit KV cache size (wins over the share above)
    max_seqs: int = 256  # sequences the engine decodes together
    # Keep the KV cache and CUDA graphs between steps: the cache holds only one
    # step's rows, and re-capturing graphs each step cost more than it saves.
    keep_engine_memory: bool = True


class RegimeWReward:
    """TRL reward function: groups completions by question id, scores the
    groups with Regime W, returns the reward per completion in input order."""

    __name__ = "regime_w"

    def __init__(self, bandit: Any, weights: Any, arm: Optional[str] = None):
        self.bandit = bandit
        self.weights = weights
        self.arm = arm
        self.seen = 0
        self.reward_sum = 0.0
        self.correct_sum = 0.0
        self.known = 0

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                 question_id: list[str], gold: list[Optional[float]], question: list[str],
                 log_metric: Any = None, **_: Any) -> list[float]:
        from looper_cli.scoring import score_groups

        order: "OrderedDict[str, list[int]]" = OrderedDict()
        for i, qid in enumerate(question_id):
            order.setdefault(qid, []).append(i)
        members = list(order.values())
        scored = score_groups(
            [[completions[i] for i in idx] for idx in members],
            [[len(completion_ids[i]) for i in idx] for idx in members],
            self.bandit,
            golds=[gold[idx[0]] for idx in members],
            questions=[question[idx[0]] for idx in members],
            weights=self.weights,
            learn=True,
            arm=self.arm,
        )
        rewards = [0.0] * len(completions)
        flat = [i for idx in members for i in idx]
        for pos, i in enumerate(flat):
            rewards[i] = float(scored.reward[pos])
        self._log(scored, log_metric)
        return rewards

    def _log(self, scored: Any, log_metric: Any) -> None:
        known = scored.correct >= 0
        accuracy = float((scored.correct[known] == 1).mean()) if known.any() else None
        self.seen += len(scored.reward)
        self.reward_sum += float(scored.reward.sum())
        self.known += int(known.sum())
        self.correct_sum += float((scored.correct == 1).sum())
        if log_metric is not None:
            log_metric("s_wm", float(scored.s_wm.mean()))
            if accuracy is not None:
                log_metric("accuracy", accuracy)


def run_ppo(cfg: PPOStageConfig) -> dict[str, Any]:
    """Train with the Regime W reward; save the adapter (or model), tokenizer,
    config.toml, bandit.json and summary.json; return the summary."""
    with training.claim_stage_output(cfg, SECTION):
        return _train_ppo(cfg)


def _train_ppo(cfg: PPOStageConfig) -> dict[str, Any]:
    if cfg.compile_layers and cfg.engine == "hf":
        raise UserError("ppo --compile needs --engine fast or auto: transformers' sampling would run the "
                        "compiled layers and recompile them at every generated length")
    start = start_checkpoint(cfg)
    check_engine_options(cfg)
    cfg = dataclasses.replace(cfg, template=resolve_template(cfg.template, start))
    out = training.prepare_output(cfg, SECTION)
    if out.done is not None:
        return out.done
    out_dir, resume_from = out.dir, out.resume_from
    problems = load_problems(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                             bare_answers=cfg.bare_answers)  # fail fast on bad data
    training.quiet_hf_logging()
    run = setup_ppo(cfg, start, problems, out_dir, resume_from)
    trainer = run.trainer
    progress = training.progress_callback(cfg.algo)
    training.add_progress(trainer, progress)
    summary = training.train_and_summarise(
        trainer, SECTION, out_dir, resume_from, progress,
        extra={"prompts": len(run.dataset), "num_generations": cfg.num_generations,
               "compiled_layers": run.compiled_layers, **training.stage_summary_fields(cfg)},
        oom_advice=OOM_ADVICE,
    )
    summary.update(totals_over_processes(run, summary["seconds"], cfg.engine))
    training.drop_reference_adapter(trainer.model)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        from looper_cli.scoring import BANDIT_STATE_NAME, save_bandit

        save_bandit(run.reward.bandit, out_dir / BANDIT_STATE_NAME)
    training.save_tokenizer_and_config(run.tokenizer, cfg, SECTION, out_dir, run.base_record)
    training.write_summary(summary, out_dir, trainer.is_world_process_zero())
    return summary


OOM_ADVICE = ("lower --batch-size or --max-new-tokens, or turn on --gradient-checkpointing "
              "(or --release-engine-memory, or lower --gpu-memory-utilization or --kv-cache-gib)")


@dataclass
class PPORun:
    """A trainer ready to train, and the pieces run_ppo reads afterwards."""

    trainer: Any
    reward: "RegimeWReward"
    sampler: Any  # ppo_rollout.GroupSampler
    tokenizer: Any
    dataset: Any
    base_record: Any  # the base model's identity, saved beside the adapter
    compiled_layers: int = 0  # decoder layers torch.compiled for training (--compile)


def setup_ppo(cfg: PPOStageConfig, start: Path, problems: list[Problem], out_dir: Path,
              resume_from: Optional[str]) -> PPORun:
    """Policy, dataset, reward (with its bandit), engine sampler and trainer,
    with the callback that saves the bandit in each checkpoint."""
    from looper_cli.ppo_rollout import GroupSampler
    from looper_cli.models import base_identity
    from looper_cli.reward import RewardWeights

    model, tokenizer, adapter = training.load_trainable_policy(start, cfg.base_model, "--sft/--dpo")
    base_record = base_identity(model)
    if cfg.attn_implementation:
        from looper_cli.engine.llama import base_causal_lm

        base_causal_lm(model).set_attn_implementation(cfg.attn_implementation)
    dataset = ppo_dataset(problems, tokenizer, cfg.template)
    reward = RegimeWReward(load_bandit_state(cfg, out_dir, resume_from),
                           RewardWeights(cfg.alpha, cfg.beta, cfg.gamma, cfg.shaping),
                           arm=cfg.coherence_arm)
    sampler = GroupSampler(sampling_engine(cfg, model), engine_config(cfg), keep_memory=cfg.keep_engine_memory)
    trainer = build_trainer(cfg, model, tokenizer, dataset, reward, out_dir, sampler,
                            peft_config=None if adapter is not None or cfg.full else training.lora_config(cfg, model))
    trainer.add_callback(bandit_saver(reward, out_dir))
    compiled = training.compile_decoder_layers(trainer.model, cfg)
    return PPORun(trainer, reward, sampler, tokenizer, dataset, base_record, compiled)


def sampling_engine(cfg: PPOStageConfig, model: Any) -> str:
    """The engine ppo samples with: `cfg.engine`, but the fast one whenever
    the layers are compiled for training. The fast engine reads the weights
    and never calls the layers; transformers' sampling would run the
    compiled layers and recompile them at every generated length."""
    if not cfg.compile_layers:
        return cfg.engine
    from looper_cli.engine.llama import fast_engine_refusal

    why = fast_engine_refusal(model)
    if why is not None:
        raise UserError(f"ppo --compile samples with the fast engine, which cannot run this model ({why}); "
                        "drop --compile")
    return "fast"


def engine_config(cfg: PPOStageConfig) -> Any:
    """The engine's settings (ppo's own `max_seqs`: its --batch-size counts
    completions a step). A generation phase holds at most this process's
    completions of `steps_per_generation` optimizer steps (TRL generates for
    all their micro-batches at once), so no more rows are asked for: the KV
    cache the engine sizes for them, and takes again every phase, stays that
    small."""
    from looper_cli.engine.api import EngineConfig

    return EngineConfig(max_seqs=min(cfg.max_seqs, generation_rows(cfg)),
                        gpu_memory_utilization=cfg.gpu_memory_utilization, kv_cache_gib=cfg.kv_cache_gib)


def generation_rows(cfg: PPOStageConfig) -> int:
    """Completions one generation phase samples in this process."""
    return cfg.batch_size * cfg.grad_accum * cfg.steps_per_generation


def check_engine_options(cfg: PPOStageConfig) -> None:
    """Before any model loads: a group must fit the sequences in flight, and
    the memory options must be sane (the engine's own check)."""
    from looper_cli.engine.api import check_engine_config, check_group_fits

    config = engine_config(cfg)
    check_engine_config(config)
    check_group_fits(cfg.num_generations, config)


def totals_over_processes(run: PPORun, seconds: float, engine: str) -> dict[str, Any]:
    """Reward and generation figures of every process (each counts its own):
    sums, and the generation time of the slowest process (they sample side
    by side); `training_seconds` is the rest of the run: scoring, forward
    and backward, optimizer, checkpoints."""
    import torch

    reward, sampler, accelerator = run.reward, run.sampler, run.trainer.accelerator
    local = [reward.seen, reward.reward_sum, reward.known, reward.correct_sum, sampler.tokens, sampler.seconds]
    every = accelerator.gather(torch.tensor([local], dtype=torch.float64, device=accelerator.device))
    seen, reward_sum, known, correct, tokens = every[:, :5].sum(dim=0).tolist()
    generating = float(every[:, 5].max())
    return {"mean_reward": reward_sum / seen if seen else None,
            "accuracy": correct / known if known else None,
            "engine": sampler.engine_name or engine,
            "generated_tokens": int(tokens),
            "generation_seconds": round(generating, 3),
            "training_seconds": round(max(0.0, seconds - generating), 3),
            "generated_tokens_per_s": round(tokens / generating, 1) if generating > 0 else None}


def start_checkpoint(cfg: PPOStageConfig) -> Path:
    """The policy to start from, after checking the options that would
    otherwise fail deep inside TRL."""
    if (cfg.sft is None) == (cfg.dpo is None):
        raise UserError("ppo needs exactly one of --sft DIR or --dpo DIR (the policy to start from)")
    if cfg.num_generations < 2:
        raise UserError("--num-generations must be at least 2 (advantages are relative to the group)")
    require_positive("--temperature", cfg.temperature)
    require_at_least("--max-new-tokens", cfg.max_new_tokens, 1)
    require_at_least("--steps-per-generation", cfg.steps_per_generation, 1)
    require_positive("--clip-epsilon", cfg.clip_epsilon)
    require_at_least("--kl-beta", cfg.kl_beta, 0)
    require_arm(cfg.coherence_arm)
    if cfg.bandit_state is not None and not Path(cfg.bandit_state).is_file():
        raise UserError(f"--bandit-state file not found: {cfg.bandit_state}")
    if cfg.batch_size % cfg.num_generations:
        raise UserError(f"--batch-size ({cfg.batch_size}) must be a multiple of --num-generations "
                        f"({cfg.num_generations}) so every group is scored whole")
    return Path(cfg.sft or cfg.dpo)  # type: ignore[arg-type]


def ppo_dataset(problems: list[Problem], tokenizer: Any, template: Optional[Template]) -> Any:
    """prompt + the columns the reward needs (question id, gold, question)."""
    from datasets import Dataset

    from looper_cli.prompts import build_prompt

    return Dataset.from_list([{"prompt": build_prompt(tokenizer, p.question, template),
                               "question_id": p.id, "gold": p.gold, "question": p.question}
                              for p in problems])


def build_trainer(cfg: PPOStageConfig, model: Any, tokenizer: Any, dataset: Any, reward: Any,
                  out_dir: Path, sampler: Any, peft_config: Any) -> Any:
    """GRPOTrainer with `sampler` as its rollout_func, or RLOOTrainer sampling
    through it. `sampler=None` leaves TRL's own transformers sampling (the
    benchmark's baseline: how ppo sampled before the engine)."""
    device = training.train_device()
    common = dict(
        opts=cfg, out_dir=out_dir, device=device,
        num_generations=cfg.num_generations,
        steps_per_generation=cfg.grad_accum * cfg.steps_per_generation,  # TRL counts micro-batches
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        beta=cfg.kl_beta,
        epsilon=cfg.clip_epsilon,
        include_num_input_tokens_seen="no",  # the RL trainers count tokens themselves
        remove_unused_columns=False,  # the reward reads question_id / gold / question
    )
    if cfg.algo == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        from looper_cli.ppo_rollout import rloo_trainer_class

        trainer_class = RLOOTrainer if sampler is None else rloo_trainer_class(sampler)
        return trainer_class(model=model, reward_funcs=[reward], args=training.trl_config(RLOOConfig, **common),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    from trl import GRPOConfig, GRPOTrainer

    with warnings.catch_warnings():  # TRL marks rollout_func, its generation hook, experimental
        warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
        return GRPOTrainer(model=model, reward_funcs=[reward], args=training.trl_config(GRPOConfig, **common),
                           train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                           rollout_func=sampler)


def load_bandit_state(cfg: PPOStageConfig, out_dir: Path, resume_from: Optional[str]) -> Any:
    """The bandit a resumed run's checkpoint saved; else bandit.json in the
    output folder; else `bandit_state`; else a fresh seeded one."""
    from looper_cli.scoring import BANDIT_STATE_NAME, load_bandit

    candidates = [Path(resume_from) / BANDIT_STATE_NAME if resume_from else None,
                  out_dir / BANDIT_STATE_NAME, cfg.bandit_state]
    found = next((c for c in candidates if c is not None and Path(c).is_file()), None)
    return load_bandit(found, seed=cfg.seed)


def bandit_saver(reward: RegimeWReward, out_dir: Path) -> Any:
    """Saves the bandit with each checkpoint (and beside the output)."""
    from transformers import TrainerCallback

    from looper_cli.scoring import BANDIT_STATE_NAME, save_bandit

    class BanditSaver(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                checkpoint = out_dir / f"checkpoint-{state.global_step}"
                if checkpoint.is_dir():
                    save_bandit(reward.bandit, checkpoint / BANDIT_STATE_NAME)
                save_bandit(reward.bandit, out_dir / BANDIT_STATE_NAME)

    return BanditSaver()
