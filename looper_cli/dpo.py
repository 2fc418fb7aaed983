"""Direct preference optimisation on Regime W preference pairs (TRL's DPOTrainer).

The policy is the SFT adapter, trainable. The reference is a frozen copy of
that same adapter (TRL adds it as a second adapter named "ref" when given a
PeftModel and no ref_model), not the bare base model: DPO then measures how
far training moved from SFT. The copy is deleted before saving, so the output
is one adapter, like SFT's. A full SFT model gets a fresh LoRA adapter on top
(the reference is then the SFT model with the adapter disabled), or is
trained whole with `full`.

Loss variants (TRL 1.16 `loss_type`):
- `sigmoid`: the DPO paper's loss.
- `rpo`: sigmoid DPO + `rpo_alpha` x NLL of the chosen answer (TRL's
  `["sigmoid", "sft"]` with weights `[1, rpo_alpha]`; the RPO paper's form).
- `length_normalize`: the log-ratio is averaged per completion token
  (TRL's `sigmoid_norm`), so longer answers earn no margin by length alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from looper_cli import training
from looper_cli.errors import UserError, require_at_least, require_positive
from looper_cli.training import LoraOptions, TrainOptions

SECTION = "dpo"
PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass
class DPOStageConfig(LoraOptions, TrainOptions):
    sft: Optional[Path] = None  # the SFT output: an adapter folder or a full model
    base_model: Optional[str] = None  # overrides the base named in the adapter config
    prefs: Optional[Path] = None
    beta: float = 0.1
    loss: Literal["sigmoid", "rpo"] = "sigmoid"
    rpo_alpha: float = 1.0
    length_normalize: bool = False
    lr: float = 1e-5
    epochs: float = 1.0


def loss_types(cfg: DPOStageConfig) -> tuple[list[str], list[float]]:
    pref_loss = "sigmoid_norm" if cfg.length_normalize else "sigmoid"
    if cfg.loss == "rpo":
        return [pref_loss, "sft"], [1.0, cfg.rpo_alpha]
    return [pref_loss], [1.0]


def load_pairs(path: Optional[Path], limit: Optional[int] = None) -> list[dict[str, str]]:
    """The prefs JSONL rows as prompt/chosen/rejected (other keys dropped)."""
    from looper_cli.errors import require_file
    from looper_cli.jsonl import read_jsonl, require_field_types

    if path is None:
        raise UserError("dpo needs --prefs (the pairs JSONL written by `looper prefs`)")
    require_file(path, "preference pairs file")
    result = read_jsonl(path, required=PAIR_KEYS)
    if result.bad_lines:
        raise UserError(f"{path}: {len(result.bad_lines)} malformed line(s), first at line "
                        f"{result.bad_lines[0]} (each line needs {', '.join(PAIR_KEYS)})")
    require_field_types(result, path, {k: (str,) for k in PAIR_KEYS})
    rows = [{k: r[k] for k in PAIR_KEYS} for r in result.rows]
    if not rows:
        raise UserError(f"no preference pairs in {path}")
    return rows[:limit] if limit else rows


def run_dpo(cfg: DPOStageConfig) -> dict[str, Any]:
    """Train the policy on the pairs; save the adapter (or model), tokenizer,
    config.toml and summary.json; return the summary."""
    with training.claim_stage_output(cfg, SECTION):
        return _train_dpo(cfg)


def _train_dpo(cfg: DPOStageConfig) -> dict[str, Any]:
    from looper_cli.prompts import resolve_template

    if cfg.sft is None:
        raise UserError("dpo needs --sft (the SFT output folder)")
    require_positive("--beta", cfg.beta)
    require_at_least("--rpo-alpha", cfg.rpo_alpha, 0)
    # The pairs' prompts are built already; the template is recorded so that
    # rollout and eval of this adapter ask the way its SFT was taught.
    cfg = dataclasses.replace(cfg, template=resolve_template(cfg.template, cfg.sft))
    out = training.prepare_output(cfg, SECTION)
    if out.done is not None:
        return out.done
    out_dir, resume_from = out.dir, out.resume_from
    pairs = load_pairs(cfg.prefs, cfg.limit)
    training.quiet_hf_logging()

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from looper_cli.models import base_identity

    model, tokenizer, peft_config = load_policy(cfg)
    base_record = base_identity(model)
    training.require_room_for_answers(
        [len(ids) for ids in tokenizer([p["prompt"] for p in pairs], add_special_tokens=False)["input_ids"]],
        cfg.max_length)
    device = training.train_device()
    types, weights = loss_types(cfg)
    args = training.trl_config(
        DPOConfig, cfg, out_dir, device, beta=cfg.beta, loss_type=types, loss_weights=weights,
        max_length=cfg.max_length,
    )
    progress = training.progress_callback("dpo")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer, peft_config=peft_config)
    training.add_progress(trainer, progress)
    compiled = training.compile_decoder_layers(trainer.model, cfg)
    summary = training.train_and_summarise(
        trainer, "dpo", out_dir, resume_from, progress,
        extra={"pairs": len(pairs), "loss_type": "+".join(types), "compiled_layers": compiled,
               **training.stage_summary_fields(cfg)},
    )
    summary.update(_reward_fields(progress.last_logs))
    training.drop_reference_adapter(trainer.model)
    trainer.save_model(str(out_dir))
    training.save_tokenizer_and_config(tokenizer, cfg, SECTION, out_dir, base_record)
    training.write_summary(summary, out_dir, trainer.is_world_process_zero())
    return summary


def load_policy(cfg: DPOStageConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config for the trainer or None)."""
    model, tokenizer, adapter = training.load_trainable_policy(cfg.sft, cfg.base_model, "--sft")
    if adapter is not None or cfg.full:
        return model, tokenizer, None  # TRL adds the frozen "ref" copy / a ref model
    return model, tokenizer, training.lora_config(cfg, model)


def _reward_fields(logs: dict[str, float]) -> dict[str, float]:
    names = {"rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin"}
    return {short: logs[k] for k, short in names.items() if k in logs}
