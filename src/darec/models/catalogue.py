"""Scoring the whole catalogue a chunk of items at a time, so memory grows with batch x chunk,
not batch x items: the evaluator's ranks and the recommender's top-k both walk these chunks.

A model whose scores are dot products (every built-in one: :meth:`user_states` against
:meth:`item_vectors`) is scored chunk by chunk from its user states. A model that overrides
``score`` instead is scored whole once and sliced, which is correct but not bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from darec.device import free_memory
from darec.models.base import SequentialRecommender, catalogue_scores

# Bytes a score costs while a chunk is ranked: the float32 score, a comparison's bool and a copy.
BYTES_PER_SCORE = 12
# On a CPU a chunk whose scores stay in cache ranks ~3x faster than one of 64k items
# (bench/scale.py --checks eval-chunks); on an accelerator, bigger chunks mean fewer kernel launches.
CPU_CHUNK_BYTES = 1 << 23
MAX_CHUNK_BYTES = 1 << 29
MIN_CHUNK = 256


def chunk_size(batch: int, n_columns: int, device: torch.device, chunk: int = 0) -> int:
    """Items scored at once: ``chunk`` when set (> 0), else on a CPU what keeps ``batch``
    users' scores of a chunk in cache (8 MiB), elsewhere up to 512 MiB; never more than a
    quarter of the free memory."""
    if chunk > 0:
        return min(chunk, n_columns)
    budget = min(CPU_CHUNK_BYTES if device.type == "cpu" else MAX_CHUNK_BYTES, free_memory(device) // 4)
    return max(1, min(n_columns, max(MIN_CHUNK, budget // (max(batch, 1) * BYTES_PER_SCORE))))


def dot_product_model(model: SequentialRecommender) -> bool:
    return type(model).score is SequentialRecommender.score


class CatalogueScores:
    """The scores of a batch of histories against every item, handed out in chunks of items."""

    def __init__(self, model: SequentialRecommender, items: Tensor, lengths: Tensor, chunk: int = 0):
        self.n_columns = model.n_items + 1
        self.chunk = chunk_size(items.size(0), self.n_columns, items.device, chunk)
        self.full: Tensor | None = None
        if dot_product_model(model):
            self.states = model.user_states(items, lengths)
            self.table, self.bias = model.item_vectors()
        else:
            self.full = model.score(items, lengths).float()

    def _scores(self, start: int, stop: int) -> Tensor:
        if self.full is not None:
            return self.full[:, start:stop].clone()  # callers write -inf into their chunk
        bias = None if self.bias is None else self.bias[start:stop]
        return catalogue_scores(self.states, self.table[start:stop], bias)

    def chunks(self) -> Iterator[tuple[int, Tensor]]:
        """``(first item, float32 scores [B, chunk])`` over the catalogue; padding (item 0) at -inf."""
        for start in range(0, self.n_columns, self.chunk):
            scores = self._scores(start, min(start + self.chunk, self.n_columns))
            if start == 0:
                scores[:, 0] = float("-inf")
            yield start, scores

    def at(self, columns: Tensor) -> Tensor:
        """float32 scores of chosen items, ``columns`` [B, C] holding each row's item ids."""
        if self.full is not None:
            return self.full.gather(1, columns)
        with torch.autocast(columns.device.type, enabled=False):
            scores = torch.bmm(self.table[columns].float(), self.states.float()[:, :, None]).squeeze(2)
            return scores if self.bias is None else scores + self.bias[columns].float()


def mask_items(scores: Tensor, start: int, items: Tensor) -> None:
    """Set ``items`` (right-padded item ids [B, L], 0 = none) to -inf in a chunk of scores that begins at item ``start``."""
    inside = (items > 0) & (items >= start) & (items < start + scores.size(1))
    rows = torch.arange(items.size(0), device=items.device)[:, None].expand_as(items)
    scores[rows[inside], items[inside] - start] = float("-inf")


def top_k(catalogue: CatalogueScores, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each row's ``k`` best items (scores, item ids), best first, kept as the chunks go by;
    ``exclude`` (right-padded item ids [B, L]) are left out (they come last, at -inf, if k
    reaches them). Among tied scores which item is kept is unspecified."""
    best: tuple[Tensor, Tensor] | None = None
    for start, scores in catalogue.chunks():
        if exclude is not None:
            mask_items(scores, start, exclude)
        values, indices = scores.topk(min(k, scores.size(1)), dim=1)
        indices = indices + start
        if best is not None:
            values, at = torch.cat([best[0], values], 1).topk(min(k, best[0].size(1) + values.size(1)), dim=1)
            indices = torch.cat([best[1], indices], 1).gather(1, at)
        best = values, indices
    assert best is not None
    return best
