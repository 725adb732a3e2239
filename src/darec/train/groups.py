"""Metrics by group, as LLMEmb and LLM-ESR report them: users whose target is a head or a
tail item (by training popularity), and short or long users (by history length).

Head items are the most popular ``head_share`` of the catalogue (20% by default, the
usual Pareto cut), tail items the rest; long users are the ``head_share`` of users with the
longest histories, short users the rest. Ties at a boundary go to the head / long side,
so the group sizes are reported with the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from darec.data.dataset import SequenceDataset
from darec.errors import InputError


def head_items(dataset: SequenceDataset, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask over internal item ids (index 0 = padding, never head)."""
    if not 0 < head_share < 1:
        raise InputError(f"head_share must be between 0 and 1, got {head_share}")
    popularity = dataset.item_popularity()
    n_head = max(1, round(head_share * dataset.n_items))
    threshold = np.sort(popularity[1:])[::-1][n_head - 1]
    head = popularity >= threshold
    head[0] = False
    return head


def user_groups(dataset: SequenceDataset, histories: Sequence[np.ndarray], targets: np.ndarray,
                head_share: float = 0.2) -> dict[str, np.ndarray]:
    """Boolean masks over the users of a split: head-items / tail-items (by target), short / long users."""
    head = head_items(dataset, head_share)
    lengths = np.array([len(h) for h in histories])
    long_from = np.sort(lengths)[::-1][max(1, round(head_share * len(lengths))) - 1]
    return {"head-items": head[targets], "tail-items": ~head[targets],
            "short-users": lengths < long_from, "long-users": lengths >= long_from}


def group_means(per_user: dict[str, np.ndarray], groups: dict[str, np.ndarray]) -> list[dict[str, float | int | str]]:
    """Mean of every per-user metric inside each group, with the group's size."""
    return [{"group": name, "users": int(mask.sum()),
             **{metric: float(values[mask].mean()) if mask.any() else float("nan") for metric, values in per_user.items()}}
            for name, mask in groups.items()]
