"""Where computation runs: the one place that turns a ``device`` setting into a torch device,
and a ``precision`` setting into an autocast context."""

from __future__ import annotations

import contextlib

import torch

from darec.config import ConfigError


def parse_device(name: str) -> torch.device:
    """A device's spelling, checked (whether this machine has it is :func:`resolve_device`'s part)."""
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU) or a named device, refused clearly when absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = parse_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count or 'no'} CUDA device{'s' if count != 1 else ''}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r}: MPS is not available here")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of the ``precision`` setting on ``device`` (a no-op for fp32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
