"""Batches: fixed-width, right-padded item windows (0 = padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from darec.data.dataset import Ragged


def pad_right(sequences: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last ``width`` items of each sequence, right-padded: (items [N, width], lengths [N])."""
    out = np.zeros((len(sequences), width), dtype=np.int64)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-width:]
        out[row, : len(tail)] = tail
        lengths[row] = len(tail)
    return out, lengths


@dataclass
class Batch:
    """Training windows ``[B, max_len + 1]`` (right-padded), and per window how many of its
    leading next-item targets to skip: an overlapping earlier window predicts those with
    more context."""

    items: torch.Tensor
    skip: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.items.to(device), self.skip.to(device))

    def next_item_targets(self) -> torch.Tensor:
        """Targets ``[B, max_len]`` for inputs ``items[:, :-1]``; 0 where there is none."""
        targets = self.items[:, 1:]
        positions = torch.arange(targets.size(1), device=targets.device)
        return targets.masked_fill(positions[None, :] < self.skip[:, None], 0)


def training_windows(sequences: Sequence[np.ndarray], max_len: int, context: int = 0,
                     per_sequence: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut every training sequence into windows of ``max_len + 1`` items, from the end.

    Consecutive windows of one sequence overlap by ``context + 1`` items, and a window
    skips the ``context`` targets the window before it already predicts, so each
    next-item transition is a target exactly once per epoch and, in long sequences, sees
    at least ``context`` earlier items. ``per_sequence > 0`` keeps only that many windows
    of each sequence, the most recent ones (the earliest kept one skips nothing). Returns (items ``[N, max_len + 1]``, skip ``[N]``).
    """
    if not 0 <= context < max_len:
        raise ValueError(f"context must be in [0, max_len), got {context}")
    # All on arrays (no object per window): tens of millions of interactions cut in seconds.
    ragged = sequences if isinstance(sequences, Ragged) else Ragged.from_list(sequences)
    width, step = max_len + 1, max_len - context  # window k of a sequence ends k * step items before its end
    lengths = ragged.lengths()
    count = np.where(lengths >= 2, 1 + -(-np.maximum(lengths - width, 0) // step), 0)
    if per_sequence > 0:
        count = np.minimum(count, per_sequence)
    owner = np.repeat(np.arange(len(lengths)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    end = lengths[owner] - k * step
    start = np.maximum(0, end - width)
    skip = np.where(start > 0, context, 0)
    skip[np.cumsum(count)[count > 0] - 1] = 0  # a sequence's earliest kept window: nothing earlier predicts its skipped targets
    columns = np.arange(width)
    real = columns[None, :] < (end - start)[:, None]
    items = np.zeros((len(owner), width), dtype=np.int64)
    items[real] = ragged.values[((ragged.starts[owner] + start)[:, None] + columns[None, :])[real]]
    return items, skip.astype(np.int64)


def bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, pool: int = 32) -> Iterator[torch.Tensor]:
    """Shuffled batches of similar lengths, so each batch can be cut to its longest row.

    The shuffled rows are taken ``pool`` batches at a time and sorted by length inside the
    pool; the batches are then shuffled. Most padding goes, and batches stay random.
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[i]


def trim(window: torch.Tensor) -> torch.Tensor:
    """Drop the columns that are padding in every row (right padding)."""
    return window[:, : int((window > 0).sum(1).max())]
