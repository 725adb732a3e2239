"""BERT4Rec (Sun et al., 2019): a bidirectional encoder trained to fill masked items (cloze)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset
from darec.models.base import Companions, SequentialRecommender, catalogue_scores
from darec.models.item_table import ItemTableOptions, alignment_loss, item_table, item_table_companions, prepare_item_table
from darec.models.registry import register
from darec.models.transformer import ItemEncoder, TransformerConfig


@dataclass
class BERT4RecConfig(TransformerConfig, ItemTableOptions):
    name: str = option("bert4rec", "Model name.")
    dropout: float = option(0.2, "Dropout on embeddings and hidden states.", low=0, below=1)
    attn_dropout: float = option(0.2, "Dropout on attention weights.", low=0, below=1)
    mask_prob: float = option(0.2, "Share of items replaced by the mask token in training.", above=0, high=1)
    last_mask_prob: float = option(0.1, "Chance a window is trained with only its last item masked, as at inference.", low=0, high=1)


@register("bert4rec", BERT4RecConfig)
class BERT4Rec(SequentialRecommender):
    config: BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        h = config.hidden_size
        self.mask_token = n_items + 1
        # max_len history items + the mask token that asks for the next one.
        self.encoder = ItemEncoder(n_items + 2, max_len + 1, config, item_table(config, n_items, n_items + 2, h))
        self.head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h))
        self.bias = nn.Parameter(torch.zeros(n_items + 1))

    def companion_runs(self) -> dict[str, tuple[str, str]]:
        return item_table_companions(self.config)

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        prepare_item_table(self.encoder.item_embedding, self.config, dataset, companions)

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        return self.encoder.item_embedding.weight[: self.n_items + 1], self.bias  # without the mask token

    def loss(self, batch: Batch) -> Tensor:
        # Cloze training reads whole windows; overlapping windows only repeat some items.
        window = batch.items
        real = window > 0
        masked = (torch.rand(window.shape, device=window.device) < self.config.mask_prob) & real
        lengths = real.sum(1)
        last_only = torch.rand(window.size(0), device=window.device) < self.config.last_mask_prob
        last = torch.zeros_like(masked)
        last[torch.arange(window.size(0), device=window.device), lengths - 1] = True
        # Rows with nothing masked, and the "as at inference" rows, mask their last item only.
        use_last = last_only | ~masked.any(1)
        masked = torch.where(use_last[:, None], last, masked)
        hidden = self.encoder(window.masked_fill(masked, self.mask_token), causal=False)
        logits = catalogue_scores(self.head(hidden[masked]), *self.item_vectors())
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, window[masked]) + alignment_loss(self.encoder.item_embedding, self.config, window)

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        rows = torch.arange(items.size(0), device=items.device)
        extended = torch.cat([items, torch.zeros_like(items[:, :1])], dim=1)
        extended[rows, lengths] = self.mask_token
        hidden = self.encoder(extended, causal=False)
        return self.head(hidden[rows, lengths])
