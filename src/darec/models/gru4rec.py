"""GRU4Rec (Hidasi et al., 2016), in the session-parallel-free form used by RecBole: a GRU over
the item sequence, scored by dot product with the item embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from darec.config import option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset
from darec.models.base import Companions, ModelConfig, SequentialRecommender, last_state, next_item_loss
from darec.models.item_table import ItemTableOptions, alignment_loss, item_table, item_table_companions, prepare_item_table
from darec.models.registry import register


@dataclass
class GRU4RecConfig(ModelConfig, ItemTableOptions):
    name: str = option("gru4rec", "Model name.")
    hidden_size: int = option(64, "Item embedding size (and output size).", low=1)
    gru_size: int = option(128, "GRU hidden size.", low=1)
    n_layers: int = option(1, "GRU layers.", low=1)
    dropout: float = option(0.3, "Dropout on the item embeddings.", low=0, below=1)
    loss: Literal["ce", "bce"] = option("ce", "ce: cross-entropy over all items; bce: one sampled negative.")


@register("gru4rec", GRU4RecConfig)
class GRU4Rec(SequentialRecommender):
    config: GRU4RecConfig

    def __init__(self, config: GRU4RecConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        c = config
        self.item_embedding = item_table(c, n_items, n_items + 1, c.hidden_size)
        self.dropout = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.hidden_size, c.gru_size, c.n_layers, batch_first=True)
        self.out = nn.Linear(c.gru_size, c.hidden_size)

    def _hidden(self, items: Tensor) -> Tensor:
        # Right padding: the output at a real position depends only on the real items before it.
        output, _ = self.gru(self.dropout(self.item_embedding(items)))
        return self.out(output)

    def companion_runs(self) -> dict[str, tuple[str, str]]:
        return item_table_companions(self.config)

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        prepare_item_table(self.item_embedding, self.config, dataset, companions)

    def loss(self, batch: Batch) -> Tensor:
        weight = self.item_embedding.weight
        loss = next_item_loss(self._hidden(batch.items[:, :-1]), batch.next_item_targets(), weight, self.config.loss)
        return loss + alignment_loss(self.item_embedding, self.config, batch.items)

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        return last_state(self._hidden(items), lengths)

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        return self.item_embedding.weight, None
