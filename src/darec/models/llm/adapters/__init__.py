"""The adapter zoo and layer-wise plans.

A plan is a list with one entry per decoder layer, e.g. ``["lora:8", "houlsby:64",
"none", "ia3", "moe[lora:8, houlsby:16]"]``; :func:`apply_plan` adds every adapter in one call and
leaves trainable exactly the parameters the adapters added.

| entry | method |
|---|---|
| ``none`` | the layer stays frozen |
| ``lora:r`` | LoRA of rank r on every linear of the layer (peft) |
| ``ia3`` | IA3 on the attention's linears and the MLP's inner activations (peft) |
| ``houlsby:b`` | sequential bottleneck adapters of size b after the attention and after the MLP |
| ``parallel:b`` | a bottleneck adapter of size b beside the MLP |
| ``prefix:p`` | p learned key/value pairs in front of the layer's attention |
| ``moe[e1, e2, ...]:k=2`` | a mixture of experts (MixRec): adapters of the kinds above but prefix, routed top-k per token (``routing=sequence``: per sequence); see :mod:`.moe` |
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

from torch import nn

from darec.config import ConfigError
from darec.models.llm.adapters import bottleneck, moe, peft_methods, prefix  # noqa: F401  (they register themselves)
from darec.models.base import trainable_parameters
from darec.models.llm.adapters.base import ADAPTERS, LayerAnatomy, anatomy, parse_entry, register_adapter


@dataclass
class NoneSpec:
    """No adapter: the layer stays frozen."""


@register_adapter("none", NoneSpec)
def _apply_none(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    pass


def parse_plan(plan: list[str], n_layers: int, where: str = "plan") -> list[tuple[str, Any]]:
    if len(plan) != n_layers:
        raise ConfigError(f"{where}: {len(plan)} entries for {n_layers} decoder layers (one entry a layer)")
    return [parse_entry(entry, f"{where}[{i}]") for i, entry in enumerate(plan)]


def apply_plan(model: nn.Module, plan: list[str]) -> None:
    """Freeze ``model`` and add the plan's adapters; only what they add is trainable."""
    layers = anatomy(model)
    parsed = parse_plan(plan, len(layers))
    model.requires_grad_(False)
    before = {id(p) for p in model.parameters()}
    for name in ADAPTERS:
        group = [(layer, spec) for layer, (kind, spec) in zip(layers, parsed) if kind == name]
        if group:
            ADAPTERS[name][1](model, group)
    for p in model.parameters():
        p.requires_grad = id(p) not in before


def describe_plan(plan: list[str]) -> str:
    """Runs of equal entries, e.g. ``0-3 lora:8 | 4 houlsby:64 | 5-29 none``."""
    parts, start = [], 0
    for entry, run in groupby(plan):
        n = len(list(run))
        parts.append(f"{start}{'' if n == 1 else f'-{start + n - 1}'} {entry}")
        start += n
    return " | ".join(parts)


__all__ = ["ADAPTERS", "apply_plan", "describe_plan", "parse_plan", "trainable_parameters"]
