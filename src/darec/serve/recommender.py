"""Load a run once, answer many requests: original item ids in, original ids and titles out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from darec.data.batching import pad_right
from darec.errors import InputError, UnknownKey
from darec.train.run import load_run


class Recommender:
    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.run_dir = Path(run_dir)
        loaded = load_run(self.run_dir, device)
        self.model, self.config = loaded.model, loaded.config
        self.item_ids = loaded.id_map["items"]
        self.titles = loaded.id_map.get("item_text") or [""] * len(self.item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids) if i > 0}
        self.device = next(iter(self.model.state_dict().values())).device

    def internal(self, history: list[str]) -> np.ndarray:
        unknown = [h for h in history if h not in self.index]
        if unknown:
            raise UnknownKey(f"unknown item id(s) {', '.join(map(repr, unknown[:5]))}: not in the catalogue of {self.run_dir}")
        if not history:
            raise InputError("the history is empty: give at least one item id")
        return np.array([self.index[h] for h in history], dtype=np.int64)

    @torch.no_grad()
    def top_k(self, history: list[str], k: int = 10, include_seen: bool = False) -> list[dict[str, Any]]:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        seq = self.internal(history)
        items, lengths = pad_right([seq], self.model.max_len)
        scores = self.model.score(torch.from_numpy(items).to(self.device), torch.from_numpy(lengths).to(self.device))[0].float().clone()
        scores[0] = float("-inf")
        if not include_seen:
            scores[torch.from_numpy(seq).to(self.device)] = float("-inf")
        left = int(torch.isfinite(scores).sum())
        if not left:
            raise InputError(f"nothing left to recommend: the history holds all {len(self.item_ids) - 1} items of the "
                             "catalogue (include seen items to rank them anyway)")
        k = min(k, left)
        values, indices = scores.topk(k)
        return [{"item": self.item_ids[i], "score": float(v), "title": self.titles[i]} for v, i in zip(values.tolist(), indices.tolist())]


def recommend(run_dir: str | Path, history: list[str], k: int = 10, include_seen: bool = False) -> list[dict[str, Any]]:
    return Recommender(run_dir).top_k(history, k, include_seen)
