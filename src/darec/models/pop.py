"""Most-popular: every user gets the items ranked by training interaction count (a sanity floor)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from darec.config import option
from darec.data.dataset import SequenceDataset
from darec.models.base import Companions, ModelConfig, SequentialRecommender
from darec.models.registry import register


@dataclass
class PopConfig(ModelConfig):
    name: str = option("pop", "Model name.")


@register("pop", PopConfig)
class Pop(SequentialRecommender):
    def __init__(self, config: PopConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        self.counts.copy_(torch.from_numpy(dataset.item_popularity()))

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        return self.counts.new_ones(items.size(0), 1)  # everyone the same: score = count

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        return self.counts[:, None], None
