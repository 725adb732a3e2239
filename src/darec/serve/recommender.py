"""Load a run once, answer many requests: original item ids (or titles) in, original ids and
titles out; a batch of histories is scored in one forward pass, padded once."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darec.data.batching import pad_right
from darec.device import apply_compile
from darec.errors import InputError, UnknownKey
from darec.models.catalogue import CatalogueScores, top_k
from darec.train.run import load_run


class Recommender:
    def __init__(self, run_dir: str | Path, device: str = "auto", chunk: int | None = None, compile: str = "off"):
        """``chunk``: items scored at once for top-k (None: the run's ``train.eval_chunk``; 0:
        automatic, see :func:`darec.models.catalogue.chunk_size`). ``compile`` (auto, on, off; see
        :func:`darec.device.apply_compile`): worth its start-up time in a long-lived service only."""
        self.run_dir = Path(run_dir)
        loaded = load_run(self.run_dir, device)
        self.model, self.config, self.run_state = loaded.model, loaded.config, loaded.state
        self.chunk = self.config.train.eval_chunk if chunk is None else chunk
        self.model.eval()
        self.item_ids = loaded.id_map["items"]
        self.titles = loaded.id_map.get("item_text") or [""] * len(self.item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids) if i > 0}
        # Titles that name one item only (a title two items share cannot stand for either).
        by_title: dict[str, list[int]] = {}
        for i, title in enumerate(self.titles[1:], start=1):
            if title:
                by_title.setdefault(title, []).append(i)
        self.title_index = {title: items[0] for title, items in by_title.items() if len(items) == 1}
        self.device = next(iter(self.model.state_dict().values())).device
        # Histories a forward pass should hold at most: the model's own evaluation batch (about 4k
        # packed tokens for an LLM on a CPU, where larger batches pad more and leave the cache).
        self.batch_size = self.model.eval_batch_size(self.device)
        self.compiled = apply_compile(self.model, self.device, compile)
        if self.compiled:
            self._warm_up()

    def _warm_up(self) -> None:
        """Compile before the first request, not during it. torch compiles for the shapes it
        first sees, again with a length that varies, and a batch of one stays a case of its own:
        so one user at two lengths, then two batches of several users."""
        for users, length in ((1, 1), (1, 2), (2, 2), (3, 3)):
            items = np.arange(1, length + 1) % self.n_items + 1
            self.top_k_batch([items] * users, [1] * users, [True] * users)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1  # index 0 is padding

    def internal(self, history: list[str], titles: bool = False) -> np.ndarray:
        """A history's internal ids; with ``titles``, an entry may also be an item's exact title."""
        if not history:
            raise InputError("the history is empty: give at least one item id")
        out, unknown = [], []
        for h in history:
            i = self.index.get(h) or (self.title_index.get(h) if titles else None)
            if i is None:
                unknown.append(h)
            out.append(i)
        if unknown:
            raise UnknownKey(self._unknown(unknown, titles))
        return np.array(out, dtype=np.int64)

    def _unknown(self, unknown: list[str], titles: bool) -> str:
        message = f"unknown item id(s) {', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}: not in the " \
                  f"catalogue of {self.run_dir.name}"
        if titles and self.title_index:
            close = {u: difflib.get_close_matches(u, self.title_index, n=3, cutoff=0.6) for u in unknown[:5]}
            hints = [f"{u!r}: did you mean {', '.join(map(repr, c))}?" for u, c in close.items() if c]
            message += ("; " + "; ".join(hints)) if hints else " (nor an item title)"
        return message

    def check_k(self, k: int) -> None:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if k > self.n_items:
            raise InputError(f"k={k} is more than the {self.n_items} items of the catalogue")

    @torch.no_grad()
    def top_k_batch(self, histories: list[np.ndarray], ks: list[int], include_seen: list[bool]) -> list[list[dict[str, Any]]]:
        """Top-k for each internal-id history, all scored in one forward pass (empty where the
        history holds the whole catalogue and seen items are left out)."""
        items, lengths = pad_right(histories, self.model.max_len)
        catalogue = CatalogueScores(self.model, torch.from_numpy(items).to(self.device),
                                    torch.from_numpy(lengths).to(self.device), self.chunk)
        # Whole histories (not only the last max_len), empty where seen items stay in.
        seen = [np.zeros(0, dtype=np.int64) if keep else seq for seq, keep in zip(histories, include_seen)]
        exclude = torch.from_numpy(pad_right(seen, max(1, *map(len, seen)))[0]).to(self.device)
        top_values, top_indices = top_k(catalogue, max(ks), exclude)
        out = []
        for row, k in enumerate(ks):
            values, indices = top_values[row, :k].tolist(), top_indices[row, :k].tolist()
            out.append([{"item": self.item_ids[i], "score": v, "title": self.titles[i]}
                        for v, i in zip(values, indices) if v > float("-inf")])
        return out

    def nothing_left(self) -> InputError:
        return InputError(f"nothing left to recommend: the history holds all {self.n_items} items of the catalogue "
                          "(include seen items to rank them anyway)")

    def top_k(self, history: list[str], k: int = 10, include_seen: bool = False) -> list[dict[str, Any]]:
        """Top-k next items after ``history`` (original ids, oldest first), k at most what is left."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        recs = self.top_k_batch([self.internal(history)], [min(k, self.n_items)], [include_seen])[0]
        if not recs:
            raise self.nothing_left()
        return recs


def recommend(run_dir: str | Path, history: list[str], k: int = 10, include_seen: bool = False) -> list[dict[str, Any]]:
    return Recommender(run_dir).top_k(history, k, include_seen)
