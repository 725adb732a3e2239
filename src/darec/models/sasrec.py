"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from darec.config import option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset
from darec.models.base import Companions, SequentialRecommender, last_state, next_item_loss
from darec.models.item_table import ItemTableOptions, alignment_loss, item_table, item_table_companions, prepare_item_table
from darec.models.registry import register
from darec.models.transformer import ItemEncoder, TransformerConfig


@dataclass
class SASRecConfig(TransformerConfig, ItemTableOptions):
    name: str = option("sasrec", "Model name.")
    loss: Literal["ce", "bce"] = option("ce", "ce: cross-entropy over all items; bce: original loss, one sampled negative.")


@register("sasrec", SASRecConfig)
class SASRec(SequentialRecommender):
    config: SASRecConfig

    def __init__(self, config: SASRecConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        table = item_table(config, n_items, n_items + 1, config.hidden_size)
        self.encoder = ItemEncoder(n_items + 1, max_len, config, table)

    def companion_runs(self) -> dict[str, tuple[str, str]]:
        return item_table_companions(self.config)

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        prepare_item_table(self.encoder.item_embedding, self.config, dataset, companions)

    def loss(self, batch: Batch) -> Tensor:
        hidden = self.encoder(batch.items[:, :-1], causal=True)
        loss = next_item_loss(hidden, batch.next_item_targets(), self.encoder.item_embedding.weight, self.config.loss)
        return loss + alignment_loss(self.encoder.item_embedding, self.config, batch.items)

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        return last_state(self.encoder(items, causal=True), lengths)

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        return self.encoder.item_embedding.weight, None
