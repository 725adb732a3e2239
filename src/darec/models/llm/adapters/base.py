"""What every adapter method shares: the anatomy of a decoder layer, whatever the family,
and a small registry of methods, each with a typed config."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from darec.config import ConfigError, from_dict, parse_override
from darec.models.llm.backbone import decoder_layers

# Attention and MLP sub-modules of a decoder layer, by family (Llama, Qwen2, Gemma3: self_attn;
# GPT-2: attn; GPT-NeoX: attention).
ATTENTION_NAMES = ("self_attn", "attn", "attention")
MLP_NAMES = ("mlp",)
# Linear-like module types (GPT-2 uses transformers' Conv1D, a linear layer stored transposed).
LINEAR_TYPES = ("Linear", "Conv1D")


@dataclass
class LayerAnatomy:
    index: int
    name: str  # qualified name inside the model
    module: nn.Module
    attention: nn.Module
    mlp: nn.Module
    linears: dict[str, nn.Module]  # qualified name -> linear module, inside this layer

    def linears_in(self, part: nn.Module) -> dict[str, nn.Module]:
        """The linear modules of this layer inside ``part`` (its attention or its MLP)."""
        inside = {id(m) for m in part.modules()}
        return {n: m for n, m in self.linears.items() if id(m) in inside}


def _child(layer: nn.Module, names: tuple[str, ...], what: str) -> nn.Module:
    for name in names:
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    raise ConfigError(f"cannot find the {what} of {type(layer).__name__}; looked for {', '.join(names)}")


def anatomy(model: nn.Module) -> list[LayerAnatomy]:
    """Each decoder layer of ``model`` with its attention, MLP and linear modules."""
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for index, layer in enumerate(decoder_layers(model)):
        prefix = names[id(layer)]
        linears = {f"{prefix}.{n}": m for n, m in layer.named_modules() if type(m).__name__ in LINEAR_TYPES}
        out.append(LayerAnatomy(index, prefix, layer, _child(layer, ATTENTION_NAMES, "attention"),
                                _child(layer, MLP_NAMES, "MLP"), linears))
    return out


# An adapter method: a config dataclass (its first field is set by the ``:value`` of a plan
# entry), and a function that adds the adapters to a group of layers in one go.
Apply = Callable[[nn.Module, list[tuple[LayerAnatomy, Any]]], None]
ADAPTERS: dict[str, tuple[type, Apply]] = {}


def register_adapter(name: str, config: type) -> Callable[[Apply], Apply]:
    def wrap(apply: Apply) -> Apply:
        ADAPTERS[name] = (config, apply)
        return apply

    return wrap


# ``moe[lora:8, ia3]:k=1``: a method whose first field is a list takes it in brackets.
BRACKETED = re.compile(r"(\w+)\s*\[([^\[\]]*)\](.*)", re.DOTALL)


def parse_entry(entry: str, where: str = "plan") -> tuple[str, Any]:
    """``"lora:8"`` -> ("lora", LoraSpec(r=8)); ``"none"`` -> ("none", NoneSpec()); other
    fields of the method's config as ``key=value`` parts: ``"lora:8:dropout=0"``; a list in
    brackets: ``"moe[lora:8, houlsby:16]:k=1"`` -> ("moe", MoESpec(experts=[...], k=1))."""
    if not isinstance(entry, str):
        raise ConfigError(f"{where}: expected an adapter entry such as 'lora:8', got {entry!r}")
    values: dict[str, Any] = {}
    bracketed = BRACKETED.fullmatch(entry.strip())
    if bracketed:
        name, inner, rest = bracketed.groups()
        if rest.strip() and not rest.strip().startswith(":"):
            raise ConfigError(f"{where}: expected ':key=value' settings after the brackets of {entry!r}, got {rest!r}")
        parts = [p.strip() for p in rest.strip().split(":")[1:]]
    elif "[" in entry or "]" in entry:
        raise ConfigError(f"{where}: unbalanced or nested brackets in {entry!r}")
    else:
        name, *parts = [p.strip() for p in entry.strip().split(":")]
    if name not in ADAPTERS:
        raise ConfigError(f"{where}: unknown adapter {name!r}; choose from {', '.join(sorted(ADAPTERS))}")
    config_cls = ADAPTERS[name][0]
    fields = dataclasses.fields(config_cls)
    if bracketed:
        if not fields or typing.get_origin(typing.get_type_hints(config_cls)[fields[0].name]) is not list:
            raise ConfigError(f"{where}: {name} takes no bracketed list, got {entry!r}")
        values[fields[0].name] = [e.strip() for e in inner.split(",") if e.strip()]
    for i, part in enumerate(parts):
        if "=" in part:
            key, value = parse_override(part)
            if key in values:
                raise ConfigError(f"{where}: {key} given twice in {entry!r}")
            values[key] = value
        elif i == 0 and fields and not bracketed:  # the size: the method's first field
            try:
                values[fields[0].name] = int(part)
            except ValueError:
                raise ConfigError(f"{where}: the size in {entry!r} must be an integer") from None
        elif not fields:
            raise ConfigError(f"{where}: {name} takes no size or settings, got {entry!r}")
        else:
            raise ConfigError(f"{where}: {part!r} in {entry!r} is not key=value (only the first part may be a bare size)")
    return name, from_dict(config_cls, values, f"{where} ({entry})")
