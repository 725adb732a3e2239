"""The run configuration: ``data``, ``model`` and ``train`` sections, each a typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import yaml

from darec.config import ConfigError, did_you_mean, from_dict, option, parse_override, retired_keys, to_dict
from darec.device import parse_device
from darec.models import ModelConfig, model_config_class


@dataclass
class DataConfig:
    dataset: str = option("synthetic", "Named data set (ml-100k, scientific, beauty, sports, synthetic[-tiny|-small|-medium|-large|-xl]) or a path.")
    data_root: str | None = option(None, "Folder holding named data sets (default: $DAREC_DATA, ../shared/data, ~/.cache/darec/data).")
    k_core: int = option(0, "Iterative k-core filter on users and items (0 = off).", low=0)
    max_len: int = option(50, "Longest history the model reads (most recent items).", low=1)
    window_overlap: float = option(0.5, "Share of max_len by which training windows of a long sequence overlap, so early "
                                        "targets in a window still see that much context (0 = none, cheapest).", low=0, below=1)
    windows_per_user: int = option(0, "Train on only this many windows of each user's sequence, the most recent ones "
                                      "(0 = all; 1 = the last max_len items, the budget setting for LLM backbones).", low=0)


@dataclass
class TrainConfig:
    epochs: int = option(200, "Maximum training epochs.", low=1)
    batch_size: int = option(32, "Training windows per batch (small batches learn more per epoch on CPU at little cost).", low=1)
    lr: float = option(1e-3, "AdamW learning rate.", above=0)
    weight_decay: float = option(0.0, "AdamW weight decay.", low=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = option(
        "constant", "Learning rate over the budget of `epochs`: constant, or decaying to 0 at the last epoch, linearly "
                    "or as a half cosine. A resumed run given more epochs stretches the decay.")
    warmup_ratio: float = option(0.0, "Share of the budget's steps over which the learning rate first rises from 0.", low=0, below=1)
    grad_clip: float = option(5.0, "Gradient norm clip (0 = off).", low=0)
    eval_every: int = option(1, "Validate every N epochs.", low=1)
    steps_per_epoch: int = option(0, "Cap on batches per epoch, each epoch a fresh shuffle (0 = a full pass); with eval_every, "
                                     "how often to validate in steps (used by the adapter search).", low=0)
    max_minutes: float = option(0.0, "Stop after this many minutes of training in this process (0 = no limit): the epoch "
                                "under way ends early and is validated, and the best weights so far are the result.", low=0)
    patience: int = option(10, "Stop after this many validations without a better valid NDCG@10 (0 = never).", low=0)
    seed: int = option(42, "Seed for weights, shuffling, sampling and synthetic data.")
    deterministic: bool = option(False, "Use deterministic algorithms only (slower on GPU).")
    device: str = option("auto", "cpu, cuda, cuda:N, mps or auto.")
    threads: int = option(0, "CPU threads for torch (0 = torch's default).", low=0)
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "bf16: autocast, with frozen weights (a pretrained backbone) held in bf16 and trainable ones, and "
                "the optimizer state, in fp32; or fp32. auto: bf16 on CUDA with bf16 support, and on CPUs with native "
                "bf16 matrix units (AMX-BF16/AVX512-BF16, detected) for models with a pretrained backbone; else fp32. "
                "Evaluation runs the model the same way and scores in fp32.")
    compile: Literal["auto", "on", "off"] = option(
        "auto", "torch.compile the model's repeated blocks (an LLM's decoder layers, one compilation for all). auto: "
                "for pretrained backbones of 10M+ parameters where compiling works (~20 s once; DARec trains 1.3x "
                "faster on a CPU); on; off.")
    shard: Literal["off", "layers"] = option(
        "off", "Under a launcher (torchrun, accelerate launch): off = every process holds the whole model (DDP); "
               "layers = a pretrained backbone's frozen layer weights are split across the processes (FSDP2), for a "
               "backbone that does not fit one device (also set by accelerate's FSDP config). Models without one "
               "train as with off.")
    eval_batch_size: int = option(0, "Users per evaluation batch; 0 = the model's choice: 512, or on a CPU for "
                                     "models on an LLM backbone about 4k packed tokens (fewer padded tokens).", low=0)
    eval_chunk: int = option(0, "Items scored at once when ranking the catalogue (evaluation, recommend): memory "
                                "grows with the evaluation batch x eval_chunk, not with the catalogue. 0 = automatic: "
                                "what stays in cache on a CPU (faster), up to 512 MiB on a GPU, within free memory.", low=0)
    valid_users: int = option(0, "Validate during training on a fixed random sample of this many users (0 = all): "
                                 "cheaper validation on large data sets, a noisier early-stopping signal. The "
                                 "final validation and test rows always use every user.", low=0)
    exclude_history: bool = option(False, "Remove the user's earlier items from the ranking (RecBole keeps them).")
    sampled_negatives: int = option(100, "Negatives per user for the sampled protocol.", low=1)

    def __post_init__(self) -> None:
        if self.device != "auto":
            parse_device(self.device)  # the spelling; whether this machine has it is checked when the run starts


@dataclass
class RunConfig:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"data": to_dict(self.data), "model": to_dict(self.model), "train": to_dict(self.train)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = ("data", "model", "train")


def section_classes(model: str) -> dict[str, type]:
    """The config class of each section of a run config for ``model``."""
    return {"data": DataConfig, "model": model_config_class(model), "train": TrainConfig}


def config_keys(model: str) -> dict[str, set[str]]:
    """The keys of each section of a run config for ``model``."""
    return {s: {f.name for f in fields(c)} for s, c in section_classes(model).items()}


def build_config(values: dict[str, Any] | None = None, overrides: list[str] = (), model: str | None = None,
                 source: str = "config") -> RunConfig:
    """A run config from a mapping (e.g. a YAML file), then ``key=value`` overrides.

    Override keys are ``section.key`` or a bare ``key`` found in exactly one section.
    """
    values = {k: dict(v or {}) for k, v in (values or {}).items()}
    for key in values:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{key}'.{did_you_mean(key, SECTIONS)} Sections: {', '.join(SECTIONS)}")
    for section in SECTIONS:
        values.setdefault(section, {})
    if model:
        values["model"]["name"] = model
    parsed = [parse_override(o) for o in overrides]
    # The model name decides which keys the model section has, so apply it first.
    for key, value in parsed:
        if key in ("model", "model.name", "name"):
            values["model"]["name"] = value
    model_name = values["model"].setdefault("name", "sasrec")
    keys = config_keys(str(model_name))
    retired = {s: retired_keys(c) for s, c in section_classes(str(model_name)).items()}
    for key, value in parsed:
        if key in ("model", "model.name", "name"):
            continue
        section, _, name = key.rpartition(".")
        if section:
            if section not in SECTIONS:
                raise ConfigError(f"--set {key}: unknown section '{section}'.{did_you_mean(section, SECTIONS)}")
        else:
            # A retired key goes to its section, where from_dict explains what replaced it.
            owners = [s for s in SECTIONS if name in keys[s]] or [s for s in SECTIONS if name in retired[s]]
            if not owners:
                every = set().union(*keys.values())
                raise ConfigError(f"--set {key}: unknown key.{did_you_mean(name, every)} See `darec config show {model_name}`.")
            if len(owners) > 1:
                raise ConfigError(f"--set {key}: ambiguous, write one of {', '.join(f'{o}.{name}' for o in owners)}")
            section = owners[0]
        values[section][name] = value
    return RunConfig(
        data=from_dict(DataConfig, values["data"], f"{source}: data"),
        model=from_dict(model_config_class(str(model_name)), values["model"], f"{source}: model"),
        train=from_dict(TrainConfig, values["train"], f"{source}: train"),
    )

