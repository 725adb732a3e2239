"""The item table of SASRec, GRU4Rec and BERT4Rec: learned ID embeddings, or (LLMEmb's
recommendation adaptation training, RAT) a frozen LLM-generated embedding per item passed
through a trainable two-layer adapter to the model's hidden size, optionally aligned with
the item embeddings of a SASRec pre-trained on the same data (in-batch InfoNCE).

Every model that takes these options behaves as before when ``item_embeddings`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import ConfigError, option
from darec.data.dataset import SequenceDataset
from darec.data.item_embeddings import EmbeddingFileError, load_item_embeddings, read_table
from darec.models.base import Companions, companion, info_nce


@dataclass
class ItemTableOptions:
    item_embeddings: str = option("", "LLMEmb: an item-embedding file (`darec embed`), kept frozen and passed through a "
                                      "trainable two-layer adapter, instead of learned ID embeddings.")
    align_run: str = option("", "With item_embeddings: a trained SASRec run (same data) whose item embeddings the "
                                "adapter output is aligned with (empty = no alignment).")
    align_weight: float = option(0.01, "Weight of that alignment loss.", low=0)
    align_temperature: float = option(0.1, "Temperature of that alignment loss.", above=0)


class AdaptedItemEmbedding(nn.Module):
    """Looks like ``nn.Embedding`` (``weight``, ``forward(ids)``): a frozen table through a
    trainable adapter ``dim -> max(hidden, dim / 2) -> hidden``; rows past the table (e.g.
    BERT4Rec's mask token) are learned directly; row 0 (padding) is zero."""

    def __init__(self, table: Tensor, n_tokens: int, hidden: int, aligned: bool = False):
        super().__init__()
        self.register_buffer("table", table.float())  # saved with the run, never trained
        # The alignment target (filled by prepare_item_table) is saved with the run too, so a
        # resumed run aligns with what it started with, whatever became of the align_run since.
        self.align_target: Tensor | None
        self.register_buffer("align_target", torch.zeros(table.size(0), hidden) if aligned else None)
        dim = table.size(1)
        middle = max(hidden, dim // 2)
        self.adapter = nn.Sequential(nn.Linear(dim, middle), nn.GELU(), nn.Linear(middle, hidden))
        self.extra = nn.Parameter(torch.randn(n_tokens - table.size(0), hidden) * 0.02)

    @property
    def weight(self) -> Tensor:
        adapted = self.adapter(self.table[1:])
        return torch.cat([adapted.new_zeros(1, adapted.size(1)), adapted, self.extra.to(adapted.dtype)])

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


def item_table(options: ItemTableOptions, n_items: int, n_tokens: int, hidden: int) -> nn.Module:
    """ID embeddings, or the adapted LLM embeddings of ``options.item_embeddings``."""
    if not options.item_embeddings:
        table = nn.Embedding(n_tokens, hidden, padding_idx=0)
        nn.init.normal_(table.weight, std=0.02)
        return table
    table = read_table(options.item_embeddings)
    if table.size(0) != n_items + 1:
        raise EmbeddingFileError(f"{options.item_embeddings}: made for {table.size(0) - 1} items, the data set has {n_items}")
    return AdaptedItemEmbedding(table, n_tokens, hidden, aligned=bool(options.align_run))


def item_table_companions(options: ItemTableOptions) -> dict[str, tuple[str, str]]:
    """The SASRec run the adapted embeddings align with, when there is one."""
    return {"align_run": (options.align_run, "sasrec")} if options.align_run else {}


def prepare_item_table(table: nn.Module, options: ItemTableOptions, dataset: SequenceDataset,
                       companions: Companions | None) -> None:
    """Check an embedding file's item ids against the data set, and load the alignment target
    from the ``align_run`` companion."""
    if not isinstance(table, AdaptedItemEmbedding):
        if options.align_run:
            raise ConfigError("align_run needs item_embeddings (it aligns the adapted LLM embeddings)")
        return
    load_item_embeddings(options.item_embeddings, dataset)
    if options.align_run:
        target = companion(companions, "align_run").encoder.item_embedding.weight.detach()[: dataset.n_items + 1]
        hidden = table.adapter[-1].out_features
        if target.size(1) != hidden:
            raise ConfigError(f"align_run: its hidden size is {target.size(1)}, this model's {hidden}")
        table.align_target.copy_(target)


def alignment_loss(table: nn.Module, options: ItemTableOptions, items: Tensor) -> Tensor | float:
    """``align_weight`` x in-batch InfoNCE between the adapted and the pre-trained SASRec
    embeddings of the batch's distinct items (0 when alignment is off)."""
    target = getattr(table, "align_target", None)
    if target is None or options.align_weight == 0:
        return 0.0
    ids = torch.unique(items[(items > 0) & (items < target.size(0))])
    return options.align_weight * info_nce(table.weight[ids], target[ids], options.align_temperature)
