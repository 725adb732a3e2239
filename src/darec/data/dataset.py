"""From raw sequences to a leave-one-out split with contiguous ids (0 = padding)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from darec.data.formats import DataError, RawData
from darec.io import atomic_write_text


class Ragged(Sequence[np.ndarray]):
    """Users' item sequences as one flat array and where each user's starts and stops: a
    Python object per user at most (the view handed out), never one per interaction."""

    def __init__(self, values: np.ndarray, starts: np.ndarray, stops: np.ndarray):
        self.values, self.starts, self.stops = values, starts, stops

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> Ragged:
        stops = np.cumsum(lengths, dtype=np.int64)
        return cls(values, stops - lengths, stops)

    @classmethod
    def from_list(cls, sequences: Sequence[np.ndarray]) -> Ragged:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        values = np.concatenate(list(sequences)).astype(np.int64) if len(sequences) else np.zeros(0, dtype=np.int64)
        return cls.from_lengths(values, lengths)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice | np.ndarray) -> Ragged: ...

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray | Ragged:
        if isinstance(index, (int, np.integer)):
            return self.values[self.starts[index] : self.stops[index]]
        return Ragged(self.values, self.starts[index], self.stops[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        for start, stop in zip(self.starts.tolist(), self.stops.tolist()):
            yield self.values[start:stop]

    def lengths(self) -> np.ndarray:
        return self.stops - self.starts

    def flat(self) -> np.ndarray:
        """Every sequence's items, one after another, in one array."""
        lengths = self.lengths()
        offsets = np.cumsum(lengths) - lengths
        return self.values[np.repeat(self.starts - offsets, lengths) + np.arange(lengths.sum())]

    def cut(self, n: int) -> Ragged:
        """Every sequence without its last ``n`` items (no copy)."""
        return Ragged(self.values, self.starts, self.stops - n)


@dataclass
class SequenceDataset:
    """Users' item sequences (internal ids 1..n_items, time order) and the maps back.

    Leave-one-out split: the last item of each sequence is the test target, the one
    before it the validation target, the rest is training data.
    """

    name: str
    sequences: Ragged  # per user, internal item ids (int64) in time order
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

    def digest(self) -> str:
        """A checksum of everything a model sees of this data set (sequences, ids, item text
        and attributes): equal digests, equal evaluations of the same weights."""
        h = hashlib.sha256()
        for array in (self.sequences.values, self.sequences.starts, self.sequences.stops):
            h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        h.update(json.dumps([self.user_ids, self.item_ids, self.item_text, self.item_attributes]).encode())
        return h.hexdigest()

    def train_sequences(self) -> Ragged:
        return self.sequences.cut(2)

    def split(self, split: str) -> tuple[Ragged, np.ndarray]:
        """Histories and targets of ``valid`` or ``test``."""
        cut = {"valid": 2, "test": 1}[split]
        return self.sequences.cut(cut), self.sequences.values[self.sequences.stops - cut].astype(np.int64)

    def item_popularity(self) -> np.ndarray:
        """Training interaction count per internal item id (index 0 = padding = 0)."""
        return np.bincount(self.train_sequences().flat(), minlength=self.n_items + 1).astype(np.int64)

    def stats(self) -> dict[str, float | int | str]:
        lengths = self.sequences.lengths()
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


def kcore(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept (a mask) once items with fewer than ``k`` interactions and users with fewer
    than ``k`` are dropped, again and again until none is left to drop."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        kept = keep & (np.bincount(items, weights=keep, minlength=items.max(initial=0) + 1)[items] >= k)
        kept &= np.bincount(users, weights=kept, minlength=users.max(initial=0) + 1)[users] >= k
        if (kept == keep).all():
            return keep
        keep = kept


MIN_SEQUENCE = 3  # one training item, one validation target, one test target


def build_dataset(raw: RawData, name: str, k: int = 0) -> SequenceDataset:
    """Filter, drop users too short to split, and number items 1.. in order of first
    appearance (users in source order, each user's items in time order), all on columns."""
    order = raw.in_time_order()
    users, items = raw.users[order], raw.items[order]
    keep = kcore(users, items, k)
    users, items = users[keep], items[keep]
    lengths = np.bincount(users, minlength=len(raw.user_ids))
    long_enough = lengths >= MIN_SEQUENCE
    short = int(((lengths > 0) & ~long_enough).sum())
    rows = long_enough[users]
    users, items = users[rows], items[rows]
    if not len(users):
        raise DataError(raw.source, f"no user has {MIN_SEQUENCE} or more interactions after filtering")
    codes, first = np.unique(items, return_index=True)
    by_appearance = codes[np.argsort(first)]
    internal = np.zeros(len(raw.item_ids), dtype=np.int64)
    internal[by_appearance] = np.arange(1, len(by_appearance) + 1)
    item_ids = ["[PAD]"] + [raw.item_ids[c] for c in by_appearance.tolist()]
    kept_users = np.flatnonzero(long_enough)
    return SequenceDataset(
        name=name,
        sequences=Ragged.from_lengths(internal[items], lengths[kept_users]),
        user_ids=[raw.user_ids[u] for u in kept_users.tolist()],
        item_ids=item_ids,
        item_text=[""] + [raw.item_text.get(i, "") for i in item_ids[1:]],
        dropped_users=short,
        item_attributes=[[]] + [raw.item_attributes.get(i, []) for i in item_ids[1:]],
    )
