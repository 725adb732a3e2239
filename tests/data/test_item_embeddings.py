from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darec.data import load_dataset
from darec.data.item_embeddings import EmbeddingFileError, load_item_embeddings, save_item_embeddings


def test_embedding_file_round_trips_and_refuses_other_data(tmp_path: Path) -> None:
    data = load_dataset("synthetic-tiny")
    table = torch.randn(data.n_items + 1, 6)
    save_item_embeddings(tmp_path / "e.safetensors", table, data, method="test")
    assert torch.equal(load_item_embeddings(tmp_path / "e.safetensors", data), table)
    other = load_dataset("synthetic-small")
    with pytest.raises(EmbeddingFileError, match="made for 39 items"):
        load_item_embeddings(tmp_path / "e.safetensors", other)
    data.item_ids[3], data.item_ids[4] = data.item_ids[4], data.item_ids[3]
    with pytest.raises(EmbeddingFileError, match="row 3"):
        load_item_embeddings(tmp_path / "e.safetensors", data)
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    with pytest.raises(EmbeddingFileError, match="not an item-embedding file"):
        load_item_embeddings(tmp_path / "bad.safetensors", data)
