"""Ranking metrics: HR@K, NDCG@K (log2 discount) and MRR@K, with pessimistic ties."""

from __future__ import annotations

import torch
from torch import Tensor

KS = (5, 10, 20)


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each target among the candidates of its row.

    A target that ties with other candidates gets the worst rank among them, so ties never
    flatter a model (a constant scorer ranks every target last). Candidates the caller
    wants out of the ranking must already be set to ``-inf``; a target at ``-inf`` ties
    with all of them and ranks last. Broken scores never flatter either: a target scored
    NaN or +inf ranks last, and a NaN candidate counts as above the target.
    """
    target_scores = scores.gather(1, targets[:, None])
    higher = ((scores > target_scores) | scores.isnan()).sum(1)
    tied = (scores == target_scores).sum(1) - 1
    broken = target_scores.isnan().squeeze(1) | (target_scores == float("inf")).squeeze(1)
    return torch.where(broken, scores.size(1) - 1, higher + tied)


def rank_metrics(ranks: Tensor, ks: tuple[int, ...] = KS) -> dict[str, Tensor]:
    """Per-row metric values (float tensors) from 0-based ranks."""
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hit@{k}"] = hit.double()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), 0.0)
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1.0), 0.0)
    return out
