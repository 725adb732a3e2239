"""A seeded generator of sequential data with real structure.

* items belong to taste clusters and have power-law (Zipf) popularity;
* each user prefers one or two clusters;
* consecutive items are related: with probability ``p_transition`` the next item is one of
  a few fixed successors of the current item (same cluster), otherwise the user samples
  from their clusters, occasionally from the whole catalogue;
* item titles are generated from the cluster theme, so text carries signal too.

Generation is vectorised over users (in blocks), and the interactions stay integer columns, so
tens of millions of them take seconds to a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from darec.data.formats import RawData

THEMES = [
    "Lamp", "Novel", "Guitar", "Sneaker", "Teapot", "Backpack", "Drone", "Serum", "Tent", "Keyboard",
    "Puzzle", "Jacket", "Candle", "Blender", "Camera", "Notebook", "Helmet", "Perfume", "Mug", "Speaker",
    "Scarf", "Telescope", "Skillet", "Yoga Mat", "Watch", "Board Game", "Sunscreen", "Bicycle", "Pillow", "Drill",
]
ADJECTIVES = [
    "Classic", "Deluxe", "Compact", "Vintage", "Organic", "Wireless", "Premium", "Travel", "Mini", "Pro",
    "Eco", "Heavy-Duty", "Smart", "Handmade", "Ultra", "Lightweight", "Nordic", "Studio", "Family", "Urban",
]

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_users": 60, "n_items": 40, "n_clusters": 4, "mean_length": 12},
    "small": {"n_users": 1_000, "n_items": 500, "n_clusters": 10, "mean_length": 20},
    "medium": {"n_users": 10_000, "n_items": 5_000, "n_clusters": 30, "mean_length": 20},
    "large": {"n_users": 100_000, "n_items": 20_000, "n_clusters": 60, "mean_length": 15},
    "xl": {"n_users": 500_000, "n_items": 50_000, "n_clusters": 100, "mean_length": 12},
    "xxl": {"n_users": 2_500_000, "n_items": 1_000_000, "n_clusters": 300, "mean_length": 20},  # ~50M interactions
}
# Users generated at once: every preset up to xl in one block, as before blocks existed (same data).
BLOCK = 500_000


@dataclass
class SyntheticSpec:
    n_users: int = 1_000
    n_items: int = 500
    n_clusters: int = 10
    mean_length: int = 20
    min_length: int = 5
    zipf: float = 1.1
    p_transition: float = 0.6
    p_explore: float = 0.1
    n_successors: int = 3
    seed: int = 0


def generate(spec: SyntheticSpec) -> RawData:
    rng = np.random.default_rng(spec.seed)
    n, c = spec.n_items, min(spec.n_clusters, spec.n_items)
    cluster = rng.integers(0, c, size=n)
    cluster[:c] = np.arange(c)  # no empty cluster
    popularity = 1.0 / np.arange(1, n + 1) ** spec.zipf
    popularity = popularity[rng.permutation(n)]

    # Items grouped by cluster; cumulative popularity scaled to [k, k+1) inside cluster k,
    # so one searchsorted samples "an item of cluster k by popularity" for many users at once.
    order = np.lexsort((-popularity, cluster))
    grouped_cluster = cluster[order]
    weights = popularity[order]
    cum = np.zeros(n)
    for k in range(c):
        members = grouped_cluster == k
        w = np.cumsum(weights[members])
        cum[members] = k + w / w[-1]
    global_cum = np.cumsum(popularity) / popularity.sum()

    def sample_in_cluster(clusters: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(cum, clusters + rng.random(len(clusters)) * (1 - 1e-12))
        return order[np.minimum(idx, n - 1)]

    def sample_global(size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(global_cum, rng.random(size)), n - 1)

    # Successors: a few related items of the same cluster, chosen by popularity.
    successors = sample_in_cluster(np.repeat(cluster, spec.n_successors)).reshape(n, spec.n_successors)

    u = spec.n_users
    tastes = rng.integers(0, c, size=(u, 2))
    lengths = spec.min_length + rng.geometric(1.0 / max(1, spec.mean_length - spec.min_length + 1), size=u) - 1
    # Users walk in blocks, so memory holds one block's [users, longest] walk, not everyone's.
    walks = []
    for first in range(0, u, BLOCK):
        block = slice(first, min(u, first + BLOCK))
        walk = _walk(rng, spec, tastes[block], int(lengths[block].max()), successors, sample_in_cluster, sample_global)
        walks.append(walk[np.arange(walk.shape[1])[None, :] < lengths[block, None]])  # row-major: user by user
    items = np.concatenate(walks)
    users = np.repeat(np.arange(u, dtype=np.int64), lengths)
    adjectives = rng.integers(len(ADJECTIVES), size=n)
    titles = {
        f"i{j}": f"{ADJECTIVES[adjectives[j]]} {THEMES[cluster[j] % len(THEMES)]}"
        f"{'' if cluster[j] < len(THEMES) else ' ' + str(cluster[j] // len(THEMES) + 1)} No. {j}"
        for j in np.unique(items).tolist()
    }
    return RawData(users, items, [f"u{i}" for i in range(u)], [f"i{j}" for j in range(n)], None, titles,
                   f"synthetic(seed={spec.seed}, users={u}, items={n})")


def _walk(rng: np.random.Generator, spec: SyntheticSpec, tastes: np.ndarray, steps: int, successors: np.ndarray,
          sample_in_cluster: Callable[[np.ndarray], np.ndarray], sample_global: Callable[[int], np.ndarray]) -> np.ndarray:
    """``steps`` items for each user of a block ``[users, steps]`` (rows past a user's length are dropped by the caller)."""
    u = len(tastes)
    seqs = np.zeros((u, steps), dtype=np.int64)
    current = sample_in_cluster(tastes[:, 0])
    seqs[:, 0] = current
    for t in range(1, steps):
        r = rng.random(u)
        follow = successors[current, rng.integers(0, spec.n_successors, size=u)]
        own = sample_in_cluster(tastes[np.arange(u), rng.integers(0, 2, size=u)])
        explore = sample_global(u)
        current = np.where(r < spec.p_transition, follow, np.where(r < 1 - spec.p_explore, own, explore))
        seqs[:, t] = current
    return seqs


def spec_for(name: str, seed: int = 0) -> SyntheticSpec:
    """``synthetic`` (= small) or ``synthetic-<preset>``."""
    preset = name.split("-", 1)[1] if "-" in name else "small"
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic size {preset!r}; choose one of {', '.join(PRESETS)}")
    return SyntheticSpec(**PRESETS[preset], seed=seed)
