"""Supervised fine-tuning on GSM8K-style problems with TRL's SFTTrainer.

Each example is a prompt (the tutoring prompt from looper_cli.prompts) and a
completion (the reference solution ending in `#### N`); the loss covers the
completion only. LoRA (PEFT) by default, full fine-tune with `full`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from looper_cli import training
from looper_cli.data import Problem, load_problems
from looper_cli.models import ModelSource, absolute_if_local
from looper_cli.prompts import Template, resolve_template
from looper_cli.training import LoraOptions, TrainOptions

SECTION = "sft"


@dataclass
class SFTStageConfig(LoraOptions, TrainOptions):
    base_model: str = ""
    data: str = "gsm8k"
    split: str = "train"


def run_sft(cfg: SFTStageConfig) -> dict[str, Any]:
    """Train, save the adapter (or full model) + tokenizer + config.toml, and
    return the run summary (also written as summary.json)."""
    with training.claim_stage_output(cfg, SECTION):
        return _train_sft(cfg)


def _train_sft(cfg: SFTStageConfig) -> dict[str, Any]:
    from looper_cli.errors import UserError

    if not cfg.base_model:
        raise UserError("sft needs --base-model (a hub id, a model folder or a .gguf file)")
    ModelSource.parse(cfg.base_model)  # a bad path fails now, not after minutes of loading
    cfg = dataclasses.replace(cfg, template=resolve_template(cfg.template, cfg.base_model))
    out = training.prepare_output(cfg, SECTION)
    if out.done is not None:
        return out.done
    out_dir, resume_from = out.dir, out.resume_from
    problems = load_problems(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed)  # fail fast on bad data
    training.quiet_hf_logging()

    from trl import SFTConfig, SFTTrainer

    from looper_cli.models import base_identity, load_base_model, load_tokenizer

    base = absolute_if_local(cfg.base_model)
    tokenizer = load_tokenizer(base, padding_side="right")
    dataset = sft_dataset(problems, tokenizer, cfg.template)
    training.require_room_for_answers(
        [len(ids) for ids in tokenizer(list(dataset["prompt"]), add_special_tokens=False)["input_ids"]], cfg.max_length)
    device = training.train_device()
    model = load_base_model(base, device=device)
    base_record = base_identity(model)
    args = training.trl_config(
        SFTConfig, cfg, out_dir, device,
        max_length=cfg.max_length,
        completion_only_loss=True,  # learn the solution, not the question
        dataset_num_proc=None,
    )
    progress = training.progress_callback("sft")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=None if cfg.full else training.lora_config(cfg, model),
    )
    training.add_progress(trainer, progress)
    compiled = training.compile_decoder_layers(trainer.model, cfg)
    summary = training.train_and_summarise(
        trainer, "sft", out_dir, resume_from, progress,
        extra={"examples": len(dataset), "mode": "full" if cfg.full else "lora", "compiled_layers": compiled,
               **training.stage_summary_fields(cfg)},
    )
    trainer.save_model(str(out_dir))  # adapter only under LoRA; the whole model with --full
    training.save_tokenizer_and_config(tokenizer, cfg, SECTION, out_dir, base_record)
    training.write_summary(summary, out_dir, trainer.is_world_process_zero())
    return summary


def sft_dataset(problems: list[Problem], tokenizer: Any, template: Optional[Template]) -> Any:
    """prompt/completion rows from the problems (prompt-completion format:
    TRL masks the prompt out of the loss)."""
    from datasets import Dataset

    from looper_cli.prompts import build_prompt, completion_target

    rows = [{"prompt": build_prompt(tokenizer, p.question, template),
             "completion": completion_target(p.answer, template, tokenizer.eos_token),
             "question_id": p.id} for p in problems]
    return Dataset.from_list(rows)


