"""Several processes training one model, as ``torchrun`` or ``accelerate launch`` start them.

darec launches nothing itself: the launcher sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``
and the rendezvous address, and :func:`join` starts the process group from them (gloo on
CPU, NCCL on CUDA). A lone process (no ``WORLD_SIZE``, or 1) is a group of one, and then
every function here does nothing, so the single-process path stays the plain one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """Where this process stands among those training together."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The one process that writes files and prints."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's share of ``n`` rows: every ``world``-th one from its rank."""
        return slice(self.rank, n, self.world)


def launched_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 alone), known before the group starts."""
    return int(os.environ.get("RANK", "0"))


def join(device: torch.device) -> Group:
    """The group this process belongs to, started on the first call."""
    if launched_world() <= 1:
        return Group()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


def process_device(device: torch.device) -> torch.device:
    """Each process on its own GPU (``LOCAL_RANK``) when several share a machine."""
    if device.type == "cuda" and launched_world() > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def mean(group: Group, value: float, device: torch.device) -> float:
    """The mean of ``value`` over the group's processes."""
    if group.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / group.world


def gather(group: Group, value: Any) -> list[Any]:
    """Every process's ``value`` (any picklable object), in rank order, on every process.
    (The pickles only travel between the processes of one run; nothing is written.)"""
    if group.world == 1:
        return [value]
    out: list[Any] = [None] * group.world
    dist.all_gather_object(out, value)
    return out


def barrier(group: Group) -> None:
    if group.world > 1:
        dist.barrier()
