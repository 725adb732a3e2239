from __future__ import annotations

import numpy as np
import pytest

from darec.data.dataset import build_dataset
from darec.data.formats import RawData
from darec.train.groups import group_means, head_items, user_groups


def _dataset():
    # item "a" is in every training sequence, "b" in two, the rest once.
    sequences = {
        "u1": ["a", "b", "c", "d", "e"],
        "u2": ["a", "b", "f", "g", "h", "i", "j", "k"],
        "u3": ["a", "l", "m", "n"],
        "u4": ["a", "o", "p", "q", "r"],
        "u5": ["a", "s", "t", "u"],
    }
    return build_dataset(RawData.from_sequences(sequences), "groups")


def test_head_items_are_the_most_popular_share() -> None:
    data = _dataset()
    head = head_items(data, head_share=0.1)  # 21 items: 2 in the head
    ids = {data.item_ids[i] for i in np.flatnonzero(head)}
    assert ids == {"a", "b"} and not head[0]
    with pytest.raises(ValueError, match="head_share"):
        head_items(data, 1.5)


def test_user_groups_and_group_means() -> None:
    data = _dataset()
    histories, targets = data.split("test")
    groups = user_groups(data, histories, targets, head_share=0.2)
    lengths = np.array([len(h) for h in histories])
    assert groups["long-users"].sum() == 1 and lengths[groups["long-users"]].min() > lengths[groups["short-users"]].max()
    assert (groups["head-items"] ^ groups["tail-items"]).all()
    per_user = {"ndcg@10": np.arange(len(targets), dtype=float)}
    rows = {r["group"]: r for r in group_means(per_user, groups)}
    assert rows["long-users"]["ndcg@10"] == per_user["ndcg@10"][groups["long-users"]].mean()
    assert rows["short-users"]["users"] + rows["long-users"]["users"] == len(targets)
