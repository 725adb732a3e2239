"""The contract every model keeps: a training loss on a batch of item windows, and scores
of a batch of histories against the whole catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import ConfigError, option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset


def companion(companions: Companions | None, field: str) -> SequentialRecommender:
    """The loaded companion run of config ``field`` (see :meth:`SequentialRecommender.companion_runs`)."""
    if not companions or field not in companions:
        raise ConfigError(f"model.{field}: its run was not loaded; prepare() takes it from darec.train.load_companions")
    return companions[field]


@dataclass
class ModelConfig:
    name: str = option("", "Registered model name (see `darec config show`).")


class SequentialRecommender(nn.Module):
    """Base class. Item ids are 1..n_items; 0 is padding. Batches are right-padded.

    ``loss(batch)`` takes a :class:`~darec.data.batching.Batch` of training windows
    ``[B, max_len + 1]`` (a model predicting the next item reads ``items[:, :-1]`` and
    predicts ``batch.next_item_targets()``).
    ``score(items, lengths)`` returns ``[B, n_items + 1]`` scores for the item after each
    history; column 0 (padding) is ignored by the evaluator. A model's scores are dot
    products: it gives :meth:`user_states` and :meth:`item_vectors`, and evaluation and
    top-k walk the catalogue in chunks of items (:mod:`darec.models.catalogue`), so memory
    stays bounded however many items there are. A model whose scores are something else
    overrides ``score`` instead (and is then scored whole).
    """

    def __init__(self, config: ModelConfig, n_items: int, max_len: int):
        super().__init__()
        self.config, self.n_items, self.max_len = config, n_items, max_len
        self.precision = "fp32"  # how it runs: set by darec.device.apply_precision

    def companion_runs(self) -> dict[str, tuple[str, str]]:
        """Finished runs this model starts from, by config field: ``{"cf_run": (run directory,
        "sasrec")}``. The trainer loads them (checked to hold that model, trained on the same
        data) and hands them to :meth:`prepare`; models never read run directories themselves."""
        return {}

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        """Called before training with the data set (its training part and item text only),
        for what a model derives from data rather than learns: counts, tokenized titles; and
        with the loaded :meth:`companion_runs`, keyed by their config field."""

    def rebuilt_state_keys(self) -> set[str]:
        """State entries the constructor rebuilds identically (a frozen pretrained backbone),
        so checkpoints leave them out."""
        return set()

    def compile_regions(self) -> list[nn.Module]:
        """Repeated blocks worth compiling (an LLM's decoder layers; see :func:`darec.device.apply_compile`)."""
        return []

    def skips_parameters(self) -> bool:
        """Whether a training step may leave some trained parameters without a gradient (a
        router sending no token to an expert). Several processes then have to look for them
        every step (DDP's ``find_unused_parameters``); a parameter a model never reads should
        not be trained at all."""
        return False

    def eval_batch_size(self, device: torch.device) -> int:
        """Users per evaluation batch when ``train.eval_batch_size`` is 0 (automatic)."""
        return 512

    def describe(self) -> str:
        """One line on what the model is made of beyond its config (shown when training starts)."""
        return ""

    def epoch_summary(self) -> dict[str, Any]:
        """What the model reports of itself after a training epoch (JSON values, logged in
        metrics.jsonl under ``model``), e.g. the share of tokens each expert received."""
        return {}

    def epoch_tallies(self) -> list[torch.Tensor]:
        """Counters :meth:`epoch_summary` reads that each of several training processes fills
        from its own share of the batches; the trainer sums them over the processes first."""
        return []

    def figures(self, summary: dict[str, Any]) -> dict[str, Any]:
        """matplotlib figures drawn from an :meth:`epoch_summary`, by name (the trainer saves them in the run directory)."""
        return {}

    def loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        """``[B, H]``: one vector per history, whose dot product with an item's vector (plus
        the item's bias) is that item's score."""
        raise NotImplementedError

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        """The item side of the scores: ``[n_items + 1, H]`` vectors and an optional ``[n_items + 1]`` bias."""
        raise NotImplementedError

    def score(self, items: Tensor, lengths: Tensor) -> Tensor:
        return catalogue_scores(self.user_states(items, lengths), *self.item_vectors())


Companions = dict[str, SequentialRecommender]  # companion runs' models, by config field


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def last_state(hidden: Tensor, lengths: Tensor) -> Tensor:
    """Hidden state at the last real position of each right-padded row: [B, L, H] -> [B, H]."""
    return hidden[torch.arange(hidden.size(0), device=hidden.device), lengths - 1]


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor) -> Tensor:
    """Symmetric in-batch InfoNCE between matching rows of ``a`` and ``b`` (row i of each is a
    pair), on cosine similarities over ``temperature`` (a number, or a tensor to learn it)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(a.size(0), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def catalogue_scores(states: Tensor, table: Tensor, bias: Tensor | None = None) -> Tensor:
    """Scores ``[B, n_items + 1]`` of user states against an item table, in float32 even
    under bf16 autocast: bf16 keeps 8 bits of mantissa, and rounded scores tie many items."""
    with torch.autocast(states.device.type, enabled=False):
        scores = states.float() @ table.float().T
        return scores if bias is None else scores + bias.float()


def next_item_loss(hidden: Tensor, targets: Tensor, items: Tensor, kind: Literal["ce", "bce"]) -> Tensor:
    """Next-item loss at every non-padding target.

    ``ce``: softmax cross-entropy over the whole catalogue (``items`` is the [n_items + 1, H]
    output table; the padding row is excluded). ``bce``: the original SASRec loss, binary
    cross-entropy of the target against one uniformly sampled negative.
    """
    keep = targets > 0
    h, y = hidden[keep], targets[keep]
    if kind == "ce":
        logits = h @ items[1:].T
        return F.cross_entropy(logits, y - 1)
    negatives = torch.randint(1, items.size(0), y.shape, device=y.device)
    pos = (h * items[y]).sum(-1)
    neg = (h * items[negatives]).sum(-1)
    return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
