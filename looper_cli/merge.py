"""Fold a LoRA adapter into its base model: a plain transformers checkpoint
(+ tokenizer) that any tool loads without PEFT."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from looper_cli.errors import UserError

SECTION = "merge"


@dataclass
class MergeStageConfig:
    adapter: Optional[Path] = None
    base_model: Optional[str] = None  # default: the base named in the adapter config
    output: Optional[Path] = None
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32
    # Recorded in the merged folder's config.toml, so rollout and eval of the
    # merged model ask the way the adapter was taught. Default: the adapter's.
    template: Optional[Literal["chat", "plain"]] = None


def run_merge(cfg: MergeStageConfig) -> dict[str, Any]:
    from looper_cli.locks import claim_output

    if cfg.adapter is None or cfg.output is None:
        raise UserError("merge needs --adapter DIR and --output DIR")
    with claim_output(cfg.output, SECTION, folder=True):
        return _merge(cfg, Path(cfg.adapter), Path(cfg.output))


def _merge(cfg: MergeStageConfig, adapter_dir: Path, out: Path) -> dict[str, Any]:
    from looper_cli.config import save_resolved
    from looper_cli.errors import require_dir
    from looper_cli.jsonl import atomic_write_json
    from looper_cli.models import is_adapter_dir, load_model, load_tokenizer, resolve_checkpoint
    from looper_cli.prompts import resolve_template
    from looper_cli.training import SUMMARY_NAME, has_tokenizer, print_summary, quiet_hf_logging

    require_dir(adapter_dir, "adapter folder")
    if not is_adapter_dir(adapter_dir):
        raise UserError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    cfg = dataclasses.replace(cfg, template=resolve_template(cfg.template, adapter_dir))
    _dtype(cfg.dtype)  # a bad --dtype fails before the model loads
    quiet_hf_logging()
    started = time.perf_counter()
    base, adapter = resolve_checkpoint(adapter_dir, cfg.base_model)
    device = "cpu"  # merging is a few matrix adds; CPU keeps GPU memory free and works anywhere
    model = load_model(base, adapter, device=device, dtype=_dtype(cfg.dtype))
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    load_tokenizer(adapter_dir if has_tokenizer(adapter_dir) else base).save_pretrained(out)
    save_resolved(cfg, SECTION, out)
    summary = {"stage": "merge", "base_model": base, "adapter": str(adapter), "output_dir": str(out),
               "seconds": round(time.perf_counter() - started, 3)}
    atomic_write_json(out / SUMMARY_NAME, summary)
    print_summary(summary)
    return summary


def _dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"--dtype must be auto, bfloat16, float16 or float32, not {name!r}")
    return value
