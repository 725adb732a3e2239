"""Batched evaluation: full ranking over the catalogue, or the target against sampled negatives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from darec.data.batching import pad_right, trim
from darec.errors import DarecError, InputError
from darec.models import SequentialRecommender
from darec.train.metrics import KS, rank_metrics, target_ranks

Protocol = Literal["full", "sampled"]


class NonFiniteScores(DarecError, ValueError):
    """A model scored items NaN or +infinite: it has diverged, and its metrics mean nothing."""


def result_row(dataset: str, model: str, split: str, protocol: Protocol, exclude_history: bool, sampled_negatives: int,
               per_user: dict[str, np.ndarray] | None = None, **extra: object) -> dict[str, object]:
    """One row of results, as runs store them and the CLI prints them: the protocol labelled
    ``full`` or ``sampled<N>`` (which always excludes the history), ``extra`` fields (a
    variant, a group), and each metric's mean over the users of ``per_user``."""
    return {"dataset": dataset, "model": model, **extra, "protocol": protocol if protocol == "full" else f"sampled{sampled_negatives}",
            "split": split, "exclude_history": exclude_history or protocol == "sampled",
            **{name: float(values.mean()) for name, values in (per_user or {}).items()}}


def sample_negatives(histories: Sequence[np.ndarray], targets: np.ndarray, n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct items per user, uniformly from those the user never interacted with."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), n), dtype=np.int64)
    for row, (history, target) in enumerate(zip(histories, targets)):
        seen = set(history.tolist()) | {int(target)}
        if n_items - len(seen) < n:
            raise InputError(f"cannot sample {n} negatives: only {n_items - len(seen)} unseen items for user {row}")
        picked: list[int] = []
        while len(picked) < n:
            draw = rng.integers(1, n_items + 1, size=2 * n)
            for item in dict.fromkeys(draw.tolist()):
                if item not in seen and len(picked) < n:
                    picked.append(item)
                    seen.add(item)
        out[row] = picked
    return out


Setting = tuple[Protocol, bool, "np.ndarray | None"]  # protocol, exclude_history, negatives (sampled only)


def evaluate(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    protocol: Protocol = "full",
    exclude_history: bool = False,
    negatives: np.ndarray | None = None,
    batch_size: int = 512,
    ks: tuple[int, ...] = KS,
    per_user: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Mean HR/NDCG/MRR@K over users (or per-user values with ``per_user``).

    ``full``: the target is ranked against every item; ``exclude_history`` removes the
    user's earlier items from the candidates. ``sampled``: the target is ranked against
    ``negatives`` (one row per user, e.g. from :func:`sample_negatives`).
    """
    return evaluate_many(model, histories, targets, [(protocol, exclude_history, negatives)], batch_size, ks, per_user)[0]


@torch.no_grad()
def evaluate_many(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    settings: Sequence[Setting],
    batch_size: int = 512,
    ks: tuple[int, ...] = KS,
    per_user: bool = False,
) -> list[dict[str, float] | dict[str, np.ndarray]]:
    """:func:`evaluate` under several settings from one scoring pass (the model runs once)."""
    for protocol, _, negatives in settings:
        if protocol == "sampled" and negatives is None:
            raise ValueError("the sampled protocol needs negatives")
    was_training = model.training
    model.eval()
    device = next(iter(model.state_dict().values())).device
    items, lengths = pad_right(histories, model.max_len)
    # Users in order of history length, so each batch is cut to its own longest history.
    order = np.argsort(lengths, kind="stable")
    values: list[dict[str, list[torch.Tensor]]] = [{} for _ in settings]
    for start in range(0, len(targets), batch_size):
        rows = order[start : start + batch_size]
        batch_items = trim(torch.from_numpy(items[rows])).to(device)
        batch_targets = torch.from_numpy(targets[rows]).to(device)
        scores = model.score(batch_items, torch.from_numpy(lengths[rows]).to(device)).float()
        broken = (scores[:, 1:].isnan() | (scores[:, 1:] == float("inf"))).any(1)
        if broken.any():
            raise NonFiniteScores(f"the model scores items NaN or infinite for {int(broken.sum())} of {len(rows)} users in a "
                                  "batch: it has diverged (too high a learning rate, or a temperature near 0?)")
        for (protocol, exclude_history, negatives), out in zip(settings, values):
            if protocol == "full":
                ranked = scores.clone()
                ranked[:, 0] = float("-inf")
                if exclude_history:
                    for offset, row in enumerate(rows):
                        ranked[offset, torch.from_numpy(histories[row]).to(device)] = float("-inf")
                ranks = target_ranks(ranked, batch_targets)
            else:
                candidates = torch.cat([batch_targets[:, None], torch.from_numpy(negatives[rows]).to(device)], dim=1)
                ranks = target_ranks(scores.gather(1, candidates), torch.zeros_like(batch_targets))
            for name, value in rank_metrics(ranks, ks).items():
                out.setdefault(name, []).append(value.cpu())
    model.train(was_training)
    inverse = np.argsort(order, kind="stable")
    results = []
    for out in values:
        joined = {name: torch.cat(parts).numpy()[inverse] for name, parts in out.items()}
        results.append(joined if per_user else {name: float(v.mean()) for name, v in joined.items()})
    return results
