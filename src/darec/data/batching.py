"""Batches: fixed-width, right-padded item windows (0 = padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def pad_right(sequences: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last ``width`` items of each sequence, right-padded: (items [N, width], lengths [N])."""
    out = np.zeros((len(sequences), width), dtype=np.int64)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-width:]
        out[row, : len(tail)] = tail
        lengths[row] = len(tail)
    return out, lengths


def training_windows(sequences: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Cut every training sequence into windows of ``max_len + 1`` items, from the end.

    Consecutive windows overlap by one item, so each next-item transition of a sequence
    falls in exactly one window (as input ``w[:-1]`` -> target ``w[1:]``) and one epoch
    sees every training interaction once, whatever the sequence length.
    """
    width = max_len + 1
    windows = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - width)
            windows.append(seq[start:end])
            end = start + 1
    items, _ = pad_right(windows, width)
    return items


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
