"""LoRA and IA3, through peft, on chosen layers only (each with its own size)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from darec.config import ConfigError, option
from darec.models.llm.adapters.base import LayerAnatomy, register_adapter


@dataclass
class LoraSpec:
    r: int = option(8, "LoRA rank.", low=1)
    alpha_per_rank: float = option(2.0, "LoRA alpha as a multiple of the rank (alpha = 2r by default).", above=0)
    # 0 by default: 0.05 made no measurable difference to DARec (bench/results/lora_dropout.md, three
    # seeds paired over the users) and drawing its masks took a fifth of a bf16 CPU training step.
    dropout: float = option(0.0, "LoRA dropout on the adapter's input (0 = none, no masks drawn).", low=0, below=1)


@dataclass
class IA3Spec:
    """IA3 scales the attention's keys and values and the MLP's inner activations."""


# Key and value projections by family (Llama/Qwen2/Gemma3, GPT-2's fused c_attn, GPT-NeoX's fused query_key_value).
KEY_VALUE_NAMES = ("k_proj", "v_proj", "c_attn", "query_key_value", "key", "value")


def _names_regex(names: list[str]) -> str:
    # peft matches a string target against the whole module name.
    return "(" + "|".join(re.escape(n) for n in names) + ")"


@register_adapter("lora", LoraSpec)
def apply_lora(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    """One peft adapter for every LoRA layer, each layer's rank and alpha by ``rank_pattern``
    and ``alpha_pattern``; peft has no per-module dropout, so layers that differ in dropout
    get an adapter per dropout (named ``lora_d<p>``; a single one keeps peft's ``default``)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    by_dropout: dict[float, list[tuple[LayerAnatomy, LoraSpec]]] = {}
    for layer, spec in layers:
        by_dropout.setdefault(spec.dropout, []).append((layer, spec))
    for dropout, group in by_dropout.items():
        # peft matches a pattern key as a regex against the end of a module's name.
        ranks = {re.escape(n): spec.r for layer, spec in group for n in layer.linears}
        alphas = {re.escape(n): spec.alpha_per_rank * spec.r for layer, spec in group for n in layer.linears}
        first = group[0][1]
        name = "default" if len(by_dropout) == 1 else f"lora_d{dropout:g}".replace(".", "_")
        config = LoraConfig(r=first.r, lora_alpha=first.alpha_per_rank * first.r, lora_dropout=dropout,
                            target_modules=_names_regex([n for layer, _ in group for n in layer.linears]),
                            rank_pattern=ranks, alpha_pattern=alphas, fan_in_fan_out=_transposed([layer for layer, _ in group]))
        inject(inject_adapter_in_model, config, model, name)
    if len(by_dropout) > 1:
        # peft makes the adapter injected last the active one in every LoRA layer, which left the
        # layers of the other dropouts without theirs: each layer runs its own.
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.set_adapter(list(module.lora_A))


# Before rank_pattern, each LoRA setting had an adapter of its own, e.g. ``lora_r4_a2_d0_05``
# (dropout was 0.05 in every one); such weights load into today's single adapter.
OLD_LORA_ADAPTER = re.compile(r"\.(lora_[AB])\.lora_r\d+_a[\d_]+_d[\d_]+\.")


def rename_old_lora_keys(state: dict[str, Any]) -> None:
    """Rename, in place, the LoRA weights of a state dict saved with one adapter per rank."""
    for key in [k for k in state if OLD_LORA_ADAPTER.search(k)]:
        state[OLD_LORA_ADAPTER.sub(r".\1.default.", key)] = state.pop(key)


@register_adapter("ia3", IA3Spec)
def apply_ia3(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    from peft import IA3Config, inject_adapter_in_model

    targets, feedforward = [], []
    for layer, _ in layers:
        attention, down = ia3_targets(layer)
        targets += [*attention, *down]
        feedforward += down
    config = IA3Config(target_modules=_names_regex(targets), feedforward_modules=_names_regex(feedforward),
                       fan_in_fan_out=_transposed([layer for layer, _ in layers]))
    inject(inject_adapter_in_model, config, model, "ia3")


def ia3_targets(layer: LayerAnatomy) -> tuple[list[str], list[str]]:
    """IA3's linears in ``layer``: the key and value projections (whose outputs it scales) and
    the MLP's output projection(s) (whose inputs, the inner activations, it scales)."""
    attention = [n for n in layer.linears_in(layer.attention) if n.rsplit(".", 1)[-1] in KEY_VALUE_NAMES]
    if not attention:
        raise ConfigError(f"ia3: no key/value projection in {layer.name} (looked for {', '.join(KEY_VALUE_NAMES)})")
    down = [n for n, m in layer.linears_in(layer.mlp).items() if in_features(m) > out_features(m)]
    return attention, down


def inject(inject_adapter_in_model: Any, config: Any, model: nn.Module, name: str) -> None:
    with warnings.catch_warnings():
        # peft warns on a second injection into one model; plans mix methods on purpose.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)


def _transposed(layers: list[LayerAnatomy]) -> bool:
    """GPT-2's Conv1D stores its weight as [in, out]; peft must be told."""
    return any(type(m).__name__ == "Conv1D" for layer in layers for m in layer.linears.values())


def in_features(m: nn.Module) -> int:
    return m.in_features if hasattr(m, "in_features") else m.weight.shape[0]  # Conv1D stores [in, out]


def out_features(m: nn.Module) -> int:
    return m.out_features if hasattr(m, "out_features") else m.weight.shape[1]
