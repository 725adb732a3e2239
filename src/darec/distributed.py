"""Several processes training one model, as ``torchrun`` or ``accelerate launch`` start them.

darec launches nothing itself: the launcher sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``
and the rendezvous address, and :func:`join` starts the process group from them (gloo on
CPU, NCCL on CUDA). A lone process (no ``WORLD_SIZE``, or 1) is a group of one, and then
every function here does nothing, so the single-process path stays the plain one.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


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


def accelerate_fsdp() -> bool:
    """Whether ``accelerate launch`` started this process with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def sharding(setting: str) -> str:
    """``train.shard`` as the launcher may set it: an FSDP config asks for the layers to be split."""
    return "layers" if accelerate_fsdp() else setting


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


def add_up(group: Group, tensors: list[torch.Tensor]) -> None:
    """Sum each of ``tensors`` over the group's processes, in place."""
    if group.world > 1:
        for tensor in tensors:
            dist.all_reduce(tensor)


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


def leave() -> None:
    """End this process's part in its group, once its work is done. All wait for each other
    first: a process that exits straight after a collective can cut off the last message a
    slower peer is still reading ("Connection closed by peer"). Then the group is closed, as
    torch asks: left open, its threads can abort the interpreter at exit. Garbage that still
    holds the group (a DDP wrapper in a reference cycle) is collected first, so the group is
    gone when this returns."""
    if dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def shard_frozen(model: nn.Module, regions: list[nn.Module], frozen: set[nn.Parameter],
                 methods: tuple[str, ...] = ("loss", "user_states", "item_vectors", "score")) -> int:
    """Split the ``frozen`` parameters of each region (an LLM's decoder layers) across the
    processes with FSDP2 (``fully_shard``): each process keeps 1/N of them and gathers a
    layer's whole weights only for its forward and backward. Every other parameter (the
    trained adapters and heads) stays whole on every process; :func:`average_gradients` syncs
    them. Only weights a model rebuilds from their source are split, so checkpoints never hold
    a shard. Returns how many parameters are split."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    split: set[nn.Parameter] = set()
    for region in regions:
        params = list(region.parameters())
        mine = {p for p in params if p in frozen}
        if mine:
            split |= mine
            fully_shard(region, ignored_params={p for p in params if p not in mine})
    if split:
        # The model is the root (holding nothing itself): then a layer frees its gathered weights after
        # its forward (a root keeps them), and the methods callers use, not only forward, start a pass.
        fully_shard(model, ignored_params={p for p in model.parameters() if p not in split})
        for name in methods:
            if hasattr(model, name):
                register_fsdp_forward_method(model, name)
    return sum(p.numel() for p in split)


def average_gradients(group: Group, params: list[nn.Parameter]) -> None:
    """Average the gradients of parameters every process holds whole, as DDP would, in one
    all-reduce. A parameter no process used (an expert no token was routed to) keeps none.
    (DDP itself cannot wrap a model whose layers FSDP holds: it would broadcast and hook the
    sharded weights too. The parameters trained there are adapters: few, so one reduce does.)"""
    if group.world == 1 or not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params] + [used])
    dist.all_reduce(flat)
    offset = 0
    for p, anyone in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        p.grad = (flat[offset: offset + n] / group.world).view_as(p).to(p.dtype) if anyone else None
        offset += n
