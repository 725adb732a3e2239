"""Item-embedding files: one safetensors file holding the table ``[n_items + 1, dim]`` (row
0 = padding) and, in its metadata, the original item ids in row order and how it was made.
A file is only accepted for a data set with exactly those items in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from darec.data.dataset import SequenceDataset
from darec.errors import DarecError
from darec.io import atomic_write

KEY = "item_embeddings"


class EmbeddingFileError(DarecError, ValueError):
    """An item-embedding file that does not fit the data set."""


def save_item_embeddings(path: str | Path, table: torch.Tensor, dataset: SequenceDataset, **meta: Any) -> None:
    if table.shape[0] != dataset.n_items + 1:
        raise ValueError(f"{table.shape[0]} rows for {dataset.n_items} items (+ padding)")
    metadata = {"item_ids": json.dumps(dataset.item_ids), "dataset": dataset.name, "meta": json.dumps(meta)}
    tensors = {KEY: table.detach().float().cpu().contiguous()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_table(path: str | Path) -> torch.Tensor:
    """The table of an item-embedding file, unchecked (its ids are checked against a data set by
    :func:`load_item_embeddings`)."""
    path = Path(path)
    if not path.exists():
        raise EmbeddingFileError(f"{path}: no such item-embedding file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(KEY)
    except Exception as exc:  # a file safetensors cannot read, or one without the table
        raise EmbeddingFileError(f"{path}: not an item-embedding file ({exc})") from exc


def load_item_embeddings(path: str | Path, dataset: SequenceDataset) -> torch.Tensor:
    """The table of ``path``, checked against ``dataset``'s items (count, ids and order)."""
    path = Path(path)
    if not path.exists():
        raise EmbeddingFileError(f"{path}: no such item-embedding file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            table = f.get_tensor(KEY)
    except Exception as exc:  # a file safetensors cannot read, or one without the table
        raise EmbeddingFileError(f"{path}: not an item-embedding file ({exc})") from exc
    ids = json.loads(metadata.get("item_ids", "null"))
    if ids is None:
        raise EmbeddingFileError(f"{path}: no item ids in its metadata")
    if len(ids) != dataset.n_items + 1 or table.shape[0] != len(ids):
        raise EmbeddingFileError(f"{path}: made for {len(ids) - 1} items, the data set has {dataset.n_items}")
    if ids != dataset.item_ids:
        first = next(i for i, (a, b) in enumerate(zip(ids, dataset.item_ids)) if a != b)
        raise EmbeddingFileError(f"{path}: item ids differ from the data set's (row {first}: {ids[first]!r} vs "
                                 f"{dataset.item_ids[first]!r}); was it made for another data set or filter?")
    return table
