from __future__ import annotations

import math

import numpy as np
import torch

from darec.train.metrics import rank_metrics, target_ranks


def brute_force(scores: np.ndarray, target: int, k: int) -> dict[str, float]:
    """Reference: the target's rank is the number of other items scoring at least as high."""
    rank = sum(1 for j, s in enumerate(scores) if j != target and s >= scores[target])
    hit = rank < k
    return {f"hit@{k}": float(hit), f"ndcg@{k}": 1 / math.log2(rank + 2) if hit else 0.0, f"mrr@{k}": 1 / (rank + 1) if hit else 0.0}


def test_against_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 30)).astype(np.float32)  # few distinct values: many ties
    targets = rng.integers(0, 30, size=200)
    got = rank_metrics(target_ranks(torch.from_numpy(scores), torch.from_numpy(targets)), ks=(5, 10, 20))
    for row in range(200):
        for k in (5, 10, 20):
            for name, value in brute_force(scores[row], targets[row], k).items():
                assert math.isclose(float(got[name][row]), value, abs_tol=1e-12), (row, name)


def test_ties_are_pessimistic() -> None:
    constant = torch.zeros(3, 50)
    ranks = target_ranks(constant, torch.tensor([0, 10, 49]))
    assert ranks.tolist() == [49, 49, 49]  # a constant scorer ranks every target last
    assert rank_metrics(ranks)["hit@20"].sum() == 0


def test_known_values() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    m = rank_metrics(target_ranks(scores, torch.tensor([2])), ks=(1, 5))
    assert m["hit@1"].item() == 0 and m["hit@5"].item() == 1
    assert math.isclose(m["ndcg@5"].item(), 1 / math.log2(3)) and math.isclose(m["mrr@5"].item(), 0.5)


def test_broken_scores_never_flatter_a_model() -> None:
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[-inf, nan, 1.0, 2.0], [-inf, inf, 1.0, 2.0], [-inf, 0.5, nan, 2.0], [-inf, nan, nan, nan]])
    ranks = target_ranks(scores, torch.tensor([1, 1, 3, 2]))
    # A NaN or +inf target ranks last; a NaN candidate counts as above the target.
    assert ranks.tolist() == [3, 3, 1, 3]
    assert (rank_metrics(ranks)["ndcg@10"] <= 1).all()
