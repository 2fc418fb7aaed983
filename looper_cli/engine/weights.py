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

Projections that read the same input are fused where a copy is made anyway:
when any of q/k/v (or gate/up) is adapted, the group's copies are rows of one
tensor, so a decode step runs one matmul for q, k and v and one for gate and
up instead of five. At 64 rows a small model's step is a chain of tiny
kernels, and their number, not bytes or FLOPs, sets its time. A group with no
adapter keeps the parameters in place: fusing it would copy the weights.

On a GPU the rebuild is one CUDA graph: eagerly, its few hundred tiny
kernels took 45 ms of each SmolLM2 ppo step on an H200, as a graph 6 ms
(run 17). It reads the adapter and base parameters by address, which the
optimizer updates in place; a change of address, adapter set, scaling or
merge state captures it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from looper_cli.engine.graphs import capture as capture_graph
from looper_cli.errors import UserError

ATTENTION_INPUTS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"))
MLP_INPUTS = (("mlp", "gate_proj"), ("mlp", "up_proj"))


@dataclass
class LayerWeights:
    qkv: tuple[torch.Tensor, ...]  # one fused [q; k; v] weight, or the three
    o: torch.Tensor
    gate_up: tuple[torch.Tensor, ...]  # one fused [gate; up] weight, or the two
    down: torch.Tensor


class EngineWeights:
    def __init__(self, layers: list[Any]):
        self.copies: list[tuple[Any, torch.Tensor]] = []  # (projection module, the engine's copy of it)
        self.layers = [self._layer(layer) for layer in layers]
        self._graph: Any = None
        self._graph_sources: tuple = ()

    def refresh(self) -> None:
        """The copies from the projections' current parameters (adapters merged)."""
        if not self.copies:
            return
        if self.copies[0][1].device.type != "cuda":
            self._merge_all()
            return
        sources = tuple(merge_sources(module) for module, _ in self.copies)
        if self._graph is None or sources != self._graph_sources:
            self._graph, self._graph_sources = capture_graph(self._merge_all), sources
        self._graph.replay()

    def _merge_all(self) -> None:
        with torch.no_grad():
            for module, copy in self.copies:
                copy.copy_(merged_weight(module))

    def _layer(self, layer: Any) -> LayerWeights:
        def modules(names: tuple[tuple[str, str], ...]) -> list[Any]:
            return [getattr(getattr(layer, part), name) for part, name in names]

        return LayerWeights(self._group(modules(ATTENTION_INPUTS)), self._single(layer.self_attn.o_proj),
                            self._group(modules(MLP_INPUTS)), self._single(layer.mlp.down_proj))

    def _group(self, modules: list[Any]) -> tuple[torch.Tensor, ...]:
        for module in modules:
            check_projection(module)
        if not any(is_lora(m) for m in modules):
            return tuple(m.weight for m in modules)
        bases = [base_weight(m) for m in modules]
        fused = torch.empty((sum(w.shape[0] for w in bases), bases[0].shape[1]),
                            dtype=bases[0].dtype, device=bases[0].device)
        for module, rows in zip(modules, fused.split([w.shape[0] for w in bases])):
            self.copies.append((module, rows))
        return (fused,)

    def _single(self, module: Any) -> torch.Tensor:
        check_projection(module)
        if not is_lora(module):
            return module.weight
        copy = torch.empty_like(base_weight(module))
        self.copies.append((module, copy))
        return copy


def is_lora(module: Any) -> bool:
    return hasattr(module, "lora_A")


def base_weight(module: Any) -> torch.Tensor:
    return module.base_layer.weight if is_lora(module) else module.weight


def check_projection(module: Any) -> None:
    layer = module.base_layer if is_lora(module) else module
    if getattr(layer, "bias", None) is not None:
        raise UserError("--engine fast runs bias-free Llama projections only; use --engine hf")
    if getattr(module, "use_dora", {}) and any(module.use_dora.values()):
        raise UserError("--engine fast does not run DoRA adapters; use --engine hf")
    if getattr(module, "fan_in_fan_out", False):
        raise UserError("--engine fast does not run fan-in-fan-out LoRA weights; use --engine hf")


def merge_sources(module: Any) -> tuple:
    """What a captured merge of `module` depends on besides the values of
    its parameters: their addresses, the active adapters and their scaling,
    and whether adapters are disabled or already merged into the base."""
    if not is_lora(module):
        return (module.weight.data_ptr(),)
    adapters = tuple((name, module.lora_A[name].weight.data_ptr(), module.lora_B[name].weight.data_ptr(),
                      module.scaling[name]) for name in module.active_adapters if name in module.lora_A)
    return (base_weight(module).data_ptr(), adapters, bool(getattr(module, "disable_adapters", False)),
            bool(getattr(module, "merged", False)))


def merged_weight(module: Any) -> torch.Tensor:
    """W + sum over active adapters of scaling * B @ A, in float32, as W's
    dtype (W itself for a projection without an adapter)."""
    base = base_weight(module)
    if not is_lora(module):
        return base
    out = base.float()
    if not getattr(module, "disable_adapters", False) and not getattr(module, "merged", False):
        for name in module.active_adapters:
            if name in module.lora_A:
                a, b = module.lora_A[name].weight.float(), module.lora_B[name].weight.float()
                out = out.addmm(b, a, alpha=module.scaling[name])
    return out.to(base.dtype)
