"""Prefix tuning (Li & Liang, 2021), layer by layer: ``p`` learned keys and values that a
layer's attention attends to before the real tokens.

peft's prefix tuning acts on every layer at once through the model's KV cache; a plan
puts prefixes on some layers only, so each prefixed attention module gets a forward
pre-hook instead. The hook hands the attention a stand-in for its KV cache whose
``update`` puts the prefix in front of the keys and values (wrapping a real cache when
there is one), and widens the attention mask by ``p`` columns every query may see. The
prefix keys carry no rotary position, as in peft.

The keyword an attention takes its cache under has moved between transformers releases
(``past_key_value``, ``past_key_values``, ``layer_past``, and from 5.24 ``cache``), so it
is read from the attention's own signature when the adapter is applied, and a forward
hook checks that the cache was really used: a future rename fails loudly instead of
silently training a model without its prefix.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from darec.config import ConfigError, option
from darec.models.llm.adapters.base import LayerAnatomy, register_adapter

# Names an attention's forward has taken its KV cache under (newest first).
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


@dataclass
class PrefixSpec:
    length: int = option(10, "Prefix length (learned key/value pairs).", low=1)


class Prefix(nn.Module):
    def __init__(self, length: int, heads: int, head_dim: int):
        super().__init__()
        self.key = nn.Parameter(torch.randn(heads, length, head_dim) * 0.02)
        self.value = nn.Parameter(torch.randn(heads, length, head_dim) * 0.02)


class PrefixedCache:
    """Looks like a KV cache to one attention call: returns (prefix + keys, prefix + values)."""

    def __init__(self, prefix: Prefix, inner: Any = None):
        self.prefix, self.inner, self.used = prefix, inner, False

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        self.used = True
        if self.inner is not None:
            key, value = self.inner.update(key, value, layer_idx, *args, **kwargs)
        b = key.size(0)
        prefix_key = self.prefix.key.to(key.dtype).expand(b, -1, -1, -1)
        prefix_value = self.prefix.value.to(value.dtype).expand(b, -1, -1, -1)
        return torch.cat([prefix_key, key], dim=2), torch.cat([prefix_value, value], dim=2)


def _widen(mask: Tensor | None, length: int, queries: int, like: Tensor) -> Tensor:
    """The attention mask with ``length`` leading key columns every query may attend to."""
    if mask is None:  # plain causal attention, made explicit (SDPA's is_causal aligns wrongly with a prefix)
        mask = torch.ones(queries, queries, dtype=torch.bool, device=like.device).tril()[None, None]
    if mask.dim() != 4:
        raise ConfigError("prefix adapters need a 4-D attention mask (or none)")
    open_ = torch.ones(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    if mask.dtype != torch.bool:
        open_ = torch.zeros_like(open_)  # additive masks: 0 = may attend
    return torch.cat([open_, mask], dim=-1)


def cache_parameter(attention: nn.Module) -> tuple[str, int]:
    """(name, position) of the parameter under which ``attention.forward`` takes its KV cache."""
    params = list(inspect.signature(attention.forward).parameters)  # follows functools.wraps decorators
    for name in CACHE_KWARGS:
        if name in params:
            return name, params.index(name)
    raise ConfigError(f"prefix adapters: {type(attention).__name__}.forward takes no KV cache under any of "
                      f"{', '.join(CACHE_KWARGS)}; this attention cannot take a prefix")


def _hooks(prefix: Prefix, name: str, position: int):
    calls: list[PrefixedCache] = []

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if position < len(args):  # the cache was passed by position: move it to its keyword
            kwargs[name], args = args[position], args[:position] + args[position + 1:]
        calls[:] = [PrefixedCache(prefix, kwargs.get(name))]
        kwargs[name] = calls[0]
        kwargs["attention_mask"] = _widen(kwargs.get("attention_mask"), prefix.key.size(1), hidden.size(1), hidden)
        return args, kwargs

    def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not calls[0].used:
            raise RuntimeError(f"prefix adapter: {type(module).__name__} ignored the cache given as {name!r}; this "
                               "transformers release hands attention its cache another way")

    return before, after


def _kv_shape(attention: nn.Module, model: nn.Module) -> tuple[int, int]:
    """(key/value heads, head size) of an attention module."""
    config = getattr(attention, "config", None) or model.config
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    head_dim = getattr(attention, "head_dim", None) or getattr(attention, "head_size", None) or config.hidden_size // heads
    return getattr(config, "num_key_value_heads", None) or heads, head_dim


@register_adapter("prefix", PrefixSpec)
def apply_prefix(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    for layer, spec in layers:
        heads, head_dim = _kv_shape(layer.attention, model)
        layer.module.adapter_prefix = Prefix(spec.length, heads, head_dim)
        before, after = _hooks(layer.module.adapter_prefix, *cache_parameter(layer.attention))
        layer.attention.register_forward_pre_hook(before, with_kwargs=True)
        layer.attention.register_forward_hook(after, with_kwargs=True)
