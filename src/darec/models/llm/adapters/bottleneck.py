"""Bottleneck adapters, which peft lacks: sequential (Houlsby et al., 2019: after the
attention and after the MLP) and parallel (He et al., 2022: beside the MLP).

Each adapter is ``x -> up(act(down(x)))`` with ``up`` zero-initialised, so a new adapter
leaves the layer's output unchanged. The adapters are registered as sub-modules of their
decoder layer (so they are saved with it) and run from forward hooks, which works for any
family without touching its code.
"""

from __future__ import annotations

from collections.abc import Callable
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


# An expert's routing weight for the tokens at hand, ``[B, T, 1]`` (MixRec's mixtures of
# experts, see moe.py); None for an adapter that is always on.
Gate = Callable[[], Tensor] | None


def _gated(adapter: Callable[[Tensor], Tensor], gate: Gate) -> Callable[[Tensor], Tensor]:
    return adapter if gate is None else lambda x: gate() * adapter(x)


def _add_to_output(adapter: Callable[[Tensor], Tensor]):
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):  # attention modules return (output, weights, ...)
            return (output[0] + adapter(output[0]), *output[1:])
        return output + adapter(output)

    return hook


def _add_from_input(adapter: Callable[[Tensor], Tensor]):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        return output + adapter(x)

    return hook


def add_houlsby(owner: nn.Module, layer: LayerAnatomy, spec: HoulsbySpec, hidden: int, gate: Gate = None) -> None:
    """Bottlenecks after ``layer``'s attention and after its MLP, held by ``owner``."""
    owner.adapter_attention = Bottleneck(hidden, spec.size)
    owner.adapter_mlp = Bottleneck(hidden, spec.size)
    layer.attention.register_forward_hook(_add_to_output(_gated(owner.adapter_attention, gate)))
    layer.mlp.register_forward_hook(_add_to_output(_gated(owner.adapter_mlp, gate)))


def add_parallel(owner: nn.Module, layer: LayerAnatomy, spec: ParallelSpec, hidden: int, gate: Gate = None) -> None:
    """A bottleneck beside ``layer``'s MLP, held by ``owner``."""
    owner.adapter_parallel = Bottleneck(hidden, spec.size, spec.scale)
    layer.mlp.register_forward_hook(_add_from_input(_gated(owner.adapter_parallel, gate)), with_kwargs=True)


@register_adapter("houlsby", HoulsbySpec)
def apply_houlsby(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    hidden = model.get_input_embeddings().embedding_dim
    for layer, spec in layers:
        add_houlsby(layer.module, layer, spec, hidden)


@register_adapter("parallel", ParallelSpec)
def apply_parallel(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    hidden = model.get_input_embeddings().embedding_dim
    for layer, spec in layers:
        add_parallel(layer.module, layer, spec, hidden)
