"""Bottleneck adapters, which peft lacks: sequential (Houlsby et al., 2019: after the
attention and after the MLP) and parallel (He et al., 2022: beside the MLP).

Each adapter is ``x -> up(act(down(x)))`` with ``up`` zero-initialised, so a new adapter
leaves the layer's output unchanged. The adapters are registered as sub-modules of their
decoder layer (so they are saved with it) and run from forward hooks, which works for any
family without touching its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from darec.config import option
from darec.models.llm.adapters.base import LayerAnatomy, register_adapter


@dataclass
class HoulsbySpec:
    size: int = option(64, "Bottleneck size.", low=1)


@dataclass
class ParallelSpec:
    size: int = option(64, "Bottleneck size.", low=1)
    scale: float = option(4.0, "Scale of the adapter's output (He et al. use 4).")


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, size: int, scale: float = 1.0):
        super().__init__()
        self.down, self.up, self.scale = nn.Linear(hidden, size), nn.Linear(size, hidden), scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.up(nn.functional.gelu(self.down(x)))


def _add_to_output(adapter: Bottleneck):
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):  # attention modules return (output, weights, ...)
            return (output[0] + adapter(output[0]), *output[1:])
        return output + adapter(output)

    return hook


def _add_from_input(adapter: Bottleneck):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        return output + adapter(x)

    return hook


@register_adapter("houlsby", HoulsbySpec)
def apply_houlsby(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    hidden = model.get_input_embeddings().embedding_dim
    for layer, spec in layers:
        layer.module.adapter_attention = Bottleneck(hidden, spec.size)
        layer.module.adapter_mlp = Bottleneck(hidden, spec.size)
        layer.attention.register_forward_hook(_add_to_output(layer.module.adapter_attention))
        layer.mlp.register_forward_hook(_add_to_output(layer.module.adapter_mlp))


@register_adapter("parallel", ParallelSpec)
def apply_parallel(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    hidden = model.get_input_embeddings().embedding_dim
    for layer, spec in layers:
        layer.module.adapter_parallel = Bottleneck(hidden, spec.size, spec.scale)
        layer.mlp.register_forward_hook(_add_from_input(layer.module.adapter_parallel), with_kwargs=True)
