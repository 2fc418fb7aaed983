"""The weights the engine multiplies by: each decoder layer's projections as
plain tensors, so the compiled pieces see matmuls only.

Without an adapter they are the model's own parameters (read in place). With
a PEFT LoRA adapter, each adapted projection gets a merged copy W + s * B A,
rebuilt from the live parameters at the start of every generation call
(`refresh`): the engine samples with the weights the optimizer just updated,
and pays one pass over the adapted weights per call instead of two extra
small matmuls in every layer at every step. Measured before this on an H200:
an unmerged r=128 adapter took a SmolLM2-135M decode step from 1.5 to 4.8 ms
(docs/perf-notes.md, run 13c). The cost is memory: a copy of each adapted
weight (all linear layers: about the model's size again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from looper_cli.errors import UserError

PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
               ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))


@dataclass
class LayerWeights:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


class EngineWeights:
    def __init__(self, layers: list[Any]):
        self.merges: list[tuple[Any, torch.Tensor]] = []  # (LoRA module, its merged copy)
        self.layers = [LayerWeights(*(self._weight(getattr(getattr(layer, part), name))
                                      for part, name in PROJECTIONS)) for layer in layers]

    def refresh(self) -> None:
        """Merged copies from the adapters' current parameters."""
        with torch.no_grad():
            for module, merged in self.merges:
                merged.copy_(merged_weight(module))

    def _weight(self, module: Any) -> torch.Tensor:
        if getattr(module, "bias", None) is not None:
            raise UserError("--engine fast runs bias-free Llama projections only; use --engine hf")
        if not hasattr(module, "lora_A"):
            return module.weight
        check_plain_lora(module)
        merged = torch.empty_like(module.base_layer.weight)
        self.merges.append((module, merged))
        return merged


def check_plain_lora(module: Any) -> None:
    if getattr(module, "use_dora", {}) and any(module.use_dora.values()):
        raise UserError("--engine fast does not run DoRA adapters; use --engine hf")
    if getattr(module, "fan_in_fan_out", False):
        raise UserError("--engine fast does not run fan-in-fan-out LoRA weights; use --engine hf")


def merged_weight(module: Any) -> torch.Tensor:
    """W + sum over active adapters of scaling * B @ A, in float32, as W's dtype."""
    base = module.base_layer.weight
    out = base.float()
    if not getattr(module, "disable_adapters", False) and not getattr(module, "merged", False):
        for name in module.active_adapters:
            if name in module.lora_A:
                a, b = module.lora_A[name].weight.float(), module.lora_B[name].weight.float()
                out = out.addmm(b, a, alpha=module.scaling[name])
    return out.to(base.dtype)
