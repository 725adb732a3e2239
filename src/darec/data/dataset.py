"""From raw sequences to a leave-one-out split with contiguous ids (0 = padding)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darec.data.formats import DataError, RawData
from darec.io import atomic_write_text


@dataclass
class SequenceDataset:
    """Users' item sequences (internal ids 1..n_items, time order) and the maps back.

    Leave-one-out split: the last item of each sequence is the test target, the one
    before it the validation target, the rest is training data.
    """

    name: str
    sequences: list[np.ndarray]  # one int64 array per user (internal item ids)
    user_ids: list[str]  # internal user index -> original id
    item_ids: list[str]  # internal item id -> original id; item_ids[0] is the padding slot
    item_text: list[str]  # internal item id -> text ("" when none)
    dropped_users: int = 0  # users with fewer than MIN_SEQUENCE interactions, left out
    # internal item id -> (attribute, value) pairs, where the item table names its columns
    item_attributes: list[list[tuple[str, str]]] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def train_sequences(self) -> list[np.ndarray]:
        return [s[:-2] for s in self.sequences]

    def split(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """Histories and targets of ``valid`` or ``test``."""
        cut = {"valid": 2, "test": 1}[split]
        histories = [s[:-cut] for s in self.sequences]
        targets = np.array([s[-cut] for s in self.sequences], dtype=np.int64)
        return histories, targets

    def item_popularity(self) -> np.ndarray:
        """Training interaction count per internal item id (index 0 = padding = 0)."""
        counts = np.zeros(self.n_items + 1, dtype=np.int64)
        for s in self.train_sequences():
            np.add.at(counts, s, 1)
        return counts

    def stats(self) -> dict[str, float | int | str]:
        lengths = np.array([len(s) for s in self.sequences])
        n_inter = int(lengths.sum())
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "density": n_inter / max(1, self.n_users * self.n_items),
            "avg_length": float(lengths.mean()) if len(lengths) else 0.0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "items_with_text": sum(1 for t in self.item_text[1:] if t),
            "dropped_users": self.dropped_users,
        }

    def id_map(self) -> dict[str, list[str]]:
        return {"users": self.user_ids, "items": self.item_ids, "item_text": self.item_text}

    def save_id_map(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.id_map()))


def kcore(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Iteratively drop items with fewer than ``k`` interactions and users with fewer than ``k``."""
    if k <= 1:
        return sequences
    while True:
        counts = Counter(item for seq in sequences.values() for item in seq)
        kept = {u: [i for i in seq if counts[i] >= k] for u, seq in sequences.items()}
        kept = {u: seq for u, seq in kept.items() if len(seq) >= k}
        if sum(map(len, kept.values())) == sum(map(len, sequences.values())):
            return kept
        sequences = kept


MIN_SEQUENCE = 3  # one training item, one validation target, one test target


def build_dataset(raw: RawData, name: str, k: int = 0) -> SequenceDataset:
    """Filter, drop users too short to split, and assign contiguous ids in order of first appearance."""
    sequences = kcore(raw.sequences, k)
    short = sum(1 for seq in sequences.values() if len(seq) < MIN_SEQUENCE)
    sequences = {u: seq for u, seq in sequences.items() if len(seq) >= MIN_SEQUENCE}
    if not sequences:
        raise DataError(raw.source, f"no user has {MIN_SEQUENCE} or more interactions after filtering")
    item_index: dict[str, int] = {}
    for seq in sequences.values():
        for item in seq:
            item_index.setdefault(item, len(item_index) + 1)
    item_ids = ["[PAD]"] + list(item_index)
    return SequenceDataset(
        name=name,
        sequences=[np.array([item_index[i] for i in seq], dtype=np.int64) for seq in sequences.values()],
        user_ids=list(sequences),
        item_ids=item_ids,
        item_text=[""] + [raw.item_text.get(i, "") for i in item_ids[1:]],
        dropped_users=short,
        item_attributes=[[]] + [raw.item_attributes.get(i, []) for i in item_ids[1:]],
    )
