"""A run directory: everything needed to resume, evaluate and serve a trained model.

::

    RUN_DIR/
      config.yaml          resolved configuration
      id_map.json          internal ids -> original user / item ids, item text
      model.safetensors    best weights (by validation NDCG@10)
      checkpoint-<E>/      last epoch: model, optimizer and RNG tensors (safetensors)
      trainer_state.json   epoch, early-stopping state, metric history; names the checkpoint
      metrics.jsonl        one line per epoch
      results.json         final rows (valid and test, full and sampled protocols)
      per_user_test.safetensors  each test user's metrics, for paired comparisons (darec compare);
                                 per_user_valid.safetensors once a comparison on validation asked for it

Every file is written atomically; ``trainer_state.json`` is written last and is the
commit point of a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from darec.config import ConfigError, load_yaml
from darec.data.dataset import SequenceDataset
from darec.models import SequentialRecommender, build_model
from darec.train.checkpoint import load_model_state
from darec.train.config import RunConfig, build_config

CONFIG, ID_MAP, BEST, STATE, METRICS, RESULTS = (
    "config.yaml", "id_map.json", "model.safetensors", "trainer_state.json", "metrics.jsonl", "results.json",
)


@dataclass
class LoadedRun:
    config: RunConfig
    model: SequentialRecommender
    id_map: dict[str, list[str]]


def check_same_data(run_dir: Path, dataset: SequenceDataset) -> None:
    """Refuse a data set whose users or items differ from those the run was trained on."""
    saved = json.loads((Path(run_dir) / ID_MAP).read_text())
    if saved["items"] != dataset.item_ids or saved["users"] != dataset.user_ids:
        raise ValueError(f"{run_dir}: the data set no longer matches the one this run was trained on")


def load_run_dataset(run_dir: Path, config: RunConfig) -> SequenceDataset:
    """The data set a run was trained on, as its config names it; refused if it has changed since."""
    from darec.data import load_dataset

    c = config
    dataset = load_dataset(c.data.dataset, c.data.data_root, c.data.k_core, c.train.seed)
    check_same_data(run_dir, dataset)
    return dataset


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG})")
    return build_config(load_yaml(path), source=str(path))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of the ``precision`` setting on ``device`` (a no-op for fp32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_companion(run_dir: str | Path, dataset: SequenceDataset, model: str, field: str) -> LoadedRun:
    """A finished run another model builds on (e.g. a pre-trained SASRec), on CPU, checked to
    hold ``model`` trained on ``dataset``; errors name the config ``field`` that pointed to it."""
    try:
        loaded = load_run(Path(run_dir), device="cpu")
    except (ConfigError, FileNotFoundError) as exc:
        raise ConfigError(f"{field}: {exc}") from exc
    if loaded.config.model.name != model:
        raise ConfigError(f"{field}: {run_dir} holds a {loaded.config.model.name} run, not {model}")
    check_same_data(Path(run_dir), dataset)
    return loaded


def load_run(run_dir: Path, device: str = "auto") -> LoadedRun:
    """The best model of a finished (or interrupted) run, ready to score."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    weights = run_dir / BEST
    if not weights.exists():
        raise FileNotFoundError(f"{run_dir}: no {BEST} yet (the run has not finished a validation)")
    id_map = json.loads((run_dir / ID_MAP).read_text())
    model = build_model(config.model, len(id_map["items"]) - 1, config.data.max_len)
    target = resolve_device(device if device != "auto" else config.train.device)
    load_model_state(model, weights)
    return LoadedRun(config, model.to(target).eval(), id_map)
