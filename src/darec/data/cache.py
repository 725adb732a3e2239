"""A data set read from files, cached as arrays beside them: the second load maps them back.

The cache folder is ``.darec-cache/<first file's name>-<key>`` next to the data file (or,
where that folder cannot be written, under ``~/.cache/darec/datasets``). The key is a
SHA-256 of the files' bytes, the k-core setting and the cache layout's version, so an
edited file is read again and never served stale. Sequences are ``.npy`` arrays opened
memory-mapped; ids and texts are JSON. ``DAREC_DATA_CACHE=off`` turns caching off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from darec.data.dataset import Ragged, SequenceDataset
from darec.io import atomic_directory

log = logging.getLogger("darec")
VERSION = 1
USER_CACHE = Path.home() / ".cache" / "darec" / "datasets"


def cache_key(files: list[Path], k_core: int) -> str:
    digest = hashlib.sha256(f"darec-data-cache {VERSION} k_core={k_core}".encode())
    for path in files:
        digest.update(f"\0{path.name}\0".encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:24]


def _writable(folder: Path) -> bool:
    """Whether a folder may be written: permitted, and not marked read-only (which root could ignore)."""
    try:
        return bool(folder.stat().st_mode & stat.S_IWUSR) and os.access(folder, os.W_OK)
    except OSError:
        return False


def cache_folder(files: list[Path], key: str) -> Path:
    beside = files[0].parent
    return (beside / ".darec-cache" if _writable(beside) else USER_CACHE) / f"{files[0].name}-{key}"


def save(folder: Path, dataset: SequenceDataset) -> None:
    """Write the cache folder whole or not at all (a concurrent writer's copy is as good)."""
    try:
        with atomic_directory(folder) as tmp:
            np.save(tmp / "items.npy", dataset.sequences.values[: int(dataset.sequences.stops[-1])])
            np.save(tmp / "lengths.npy", dataset.sequences.lengths())
            meta = {"user_ids": dataset.user_ids, "item_ids": dataset.item_ids, "item_text": dataset.item_text,
                    "item_attributes": dataset.item_attributes, "dropped_users": dataset.dropped_users}
            (tmp / "dataset.json").write_text(json.dumps(meta))
    except OSError as exc:
        log.warning("data cache not written to %s: %s", folder, exc)


def load(folder: Path, name: str) -> SequenceDataset | None:
    try:
        items = np.load(folder / "items.npy", mmap_mode="r")
        lengths = np.load(folder / "lengths.npy")
        meta = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: read the source again
    attributes = [[tuple(pair) for pair in pairs] for pairs in meta["item_attributes"]]
    return SequenceDataset(name, Ragged.from_lengths(items, lengths), meta["user_ids"], meta["item_ids"], meta["item_text"],
                           meta["dropped_users"], attributes)


def cached(files: list[Path], k_core: int, name: str, build: Callable[[], SequenceDataset]) -> SequenceDataset:
    """The data set ``build`` makes from ``files``, from the cache when it holds it."""
    if os.environ.get("DAREC_DATA_CACHE", "").lower() in ("off", "0", "false", "no"):
        return build()
    try:
        regular = all(stat.S_ISREG(path.stat().st_mode) for path in files)
    except OSError:
        regular = False
    if not regular:
        return build()  # the reader says what is wrong with them
    folder = cache_folder(files, cache_key(files, k_core))
    dataset = load(folder, name)
    if dataset is None:
        dataset = build()
        save(folder, dataset)
    return dataset
