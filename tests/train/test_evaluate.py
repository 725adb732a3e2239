from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from darec.models import ModelConfig, SequentialRecommender
from darec.train.evaluate import evaluate, sample_negatives


class Fixed(SequentialRecommender):
    """Scores item j as j (item n is always first), whatever the history."""

    def __init__(self, n_items: int):
        super().__init__(ModelConfig("fixed"), n_items, max_len=5)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def score(self, items: Tensor, lengths: Tensor) -> Tensor:
        return torch.arange(self.n_items + 1, dtype=torch.float).expand(items.size(0), -1)


def test_full_ranking_with_and_without_history_exclusion() -> None:
    model = Fixed(10)
    histories = [np.array([10, 9]), np.array([1])]
    targets = np.array([8, 10])
    kept = evaluate(model, histories, targets, "full", exclude_history=False, ks=(1, 5), per_user=True)
    assert kept["hit@1"].tolist() == [0, 1] and kept["mrr@5"][0] == 1 / 3  # 10 and 9 above 8
    excluded = evaluate(model, histories, targets, "full", exclude_history=True, per_user=True)
    assert excluded["mrr@5"][0] == 1.0  # 10 and 9 were seen, so 8 is first
    # A target that is itself in the history (a repeat) is excluded too and ranks last: no leak.
    repeat = evaluate(model, [np.array([10])], np.array([10]), "full", exclude_history=True, per_user=True)
    assert repeat["hit@5"][0] == 0


def test_sampled_protocol() -> None:
    histories = [np.arange(1, 30), np.array([5])]
    targets = np.array([30, 6])
    neg = sample_negatives(histories, targets, 200, 100, seed=1)
    assert neg.shape == (2, 100) and all(len(set(r)) == 100 for r in neg.tolist())
    assert not set(neg[0]) & set(range(1, 31)) and 6 not in neg[1] and 5 not in neg[1]
    assert (neg == sample_negatives(histories, targets, 200, 100, seed=1)).all()
    m = evaluate(Fixed(200), histories, targets, "sampled", negatives=neg, per_user=True)
    # Target 30 is beaten by every sampled negative above 30.
    assert m["hit@20"][0] == float((neg[0] > 30).sum() < 20)


class Recording(Fixed):
    """Fixed scores; remembers how many users each call scored, and asks for batches of 2."""

    def __init__(self, n_items: int):
        super().__init__(n_items)
        self.batches: list[int] = []

    def eval_batch_size(self, device: torch.device) -> int:
        return 2

    def score(self, items: Tensor, lengths: Tensor) -> Tensor:
        self.batches.append(items.size(0))
        return super().score(items, lengths)


def test_batch_size_zero_is_the_models_choice() -> None:
    histories, targets = [np.array([1, 2])] * 5, np.full(5, 3)
    model = Recording(10)
    automatic = evaluate(model, histories, targets, per_user=True)
    assert model.batches == [2, 2, 1]
    model.batches.clear()
    chosen = evaluate(model, histories, targets, batch_size=3, per_user=True)
    assert model.batches == [3, 2]
    assert all((automatic[k] == chosen[k]).all() for k in automatic)


def test_progress_is_reported_after_each_batch() -> None:
    histories, targets = [np.array([1, 2])] * 5, np.full(5, 3)
    calls: list[tuple[int, int]] = []
    evaluate(Recording(10), histories, targets, progress=lambda done, users: calls.append((done, users)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
