"""Safetensors state for models, optimizers and RNGs, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from darec.io import DamagedFile, atomic_write


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise DamagedFile(f"{path}: damaged or truncated ({exc})") from None


def _rebuilt_keys(model: torch.nn.Module) -> set[str]:
    return set(getattr(model, "rebuilt_state_keys", lambda: set())())


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: the state dict less what the constructor rebuilds (e.g. a
    frozen pretrained backbone)."""
    skip = _rebuilt_keys(model)
    # Tied weights appear under several names; safetensors refuses shared storage, so clone.
    return {k: v.clone() for k, v in model.state_dict().items() if k not in skip}


def load_model_state(model: torch.nn.Module, path: Path, device: str | torch.device = "cpu") -> None:
    """Load weights saved by :func:`model_state`; anything else missing or extra is an error."""
    try:
        missing, unexpected = model.load_state_dict(load_tensors(path, device), strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise DamagedFile(f"{path}: weights do not fit the model: {str(exc).splitlines()[-1].strip()}") from exc
    missing = set(missing) - _rebuilt_keys(model)
    if missing or unexpected:
        raise DamagedFile(f"{path}: weights do not fit the model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and plain values (JSON)."""
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["plain"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
