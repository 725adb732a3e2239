from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from darec.config import ConfigError
from darec.data import load_dataset
from darec.data.batching import Batch, pad_right, training_windows
from darec.models import build_model
from darec.models.item_table import AdaptedItemEmbedding, alignment_loss
from darec.models.llm.llmemb import EmbeddingFileError, save_item_embeddings
from darec.train import Trainer, build_config, load_run

SMALL = ["hidden_size=16", "max_len=10"]


def _data():
    return load_dataset("synthetic-tiny", seed=42)  # the trainer's default seed, so runs see the same items


@pytest.fixture
def embedding_file(tmp_path: Path) -> Path:
    data = _data()
    path = tmp_path / "items.safetensors"
    save_item_embeddings(path, torch.randn(data.n_items + 1, 12), data)
    return path


def _table(model) -> torch.nn.Module:
    return model.item_embedding if hasattr(model, "item_embedding") else model.encoder.item_embedding


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_rat_freezes_the_embedding_and_trains_the_adapter(name: str, embedding_file: Path) -> None:
    data = _data()
    config = build_config(overrides=[f"model={name}", *SMALL, f"item_embeddings={embedding_file}"])
    model = build_model(config.model, data.n_items, 10)
    model.prepare(data)
    table = _table(model)
    assert isinstance(table, AdaptedItemEmbedding)
    assert not any(p is table.table for p in model.parameters())  # a buffer: never handed to the optimizer
    frozen, adapter = table.table.clone(), table.adapter[0].weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    items, skip = training_windows(data.train_sequences(), 10)
    for start in (0, 16):
        loss = model.loss(Batch(torch.from_numpy(items[start : start + 16]), torch.from_numpy(skip[start : start + 16])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(table.table, frozen) and not torch.equal(table.adapter[0].weight, adapter)
    assert torch.equal(table.weight[0], torch.zeros(16))  # padding row


def test_a_file_for_other_items_is_refused(embedding_file: Path) -> None:
    other = load_dataset("synthetic-small")
    config = build_config(overrides=["model=sasrec", *SMALL, f"item_embeddings={embedding_file}"])
    with pytest.raises(EmbeddingFileError, match=rf"made for \d+ items, the data set has {other.n_items}"):
        build_model(config.model, other.n_items, 10)
    data = _data()
    model = build_model(config.model, data.n_items, 10)
    data.item_ids[1], data.item_ids[2] = data.item_ids[2], data.item_ids[1]
    with pytest.raises(EmbeddingFileError, match="item ids differ"):
        model.prepare(data)


def test_alignment_with_a_pretrained_sasrec_and_a_run_round_trip(tmp_path: Path, embedding_file: Path) -> None:
    base = ["dataset=synthetic-tiny", *SMALL, "epochs=1", "batch_size=16", "patience=0"]
    Trainer(build_config(overrides=["model=sasrec", *base]), tmp_path / "cf", progress=False).fit()
    overrides = ["model=sasrec", *base, f"item_embeddings={embedding_file}", f"align_run={tmp_path / 'cf'}", "align_weight=1"]
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "rat", progress=False)
    items = torch.from_numpy(training_windows(trainer.dataset.train_sequences(), 10)[0][:8]).to(trainer.device)
    aligned = alignment_loss(trainer.model.encoder.item_embedding, trainer.model.config, items)
    assert aligned.item() > 0 and aligned.requires_grad
    trainer.fit()
    loaded = load_run(tmp_path / "rat")
    histories, _ = trainer.dataset.split("test")
    args = [torch.from_numpy(a).to(trainer.device) for a in pad_right(histories[:8], 10)]  # on CUDA where present
    with torch.no_grad():
        assert torch.allclose(trainer.model.eval().score(*args), loaded.model.score(*args))
    # The target is saved with the run: a later change to the align run does not reach it.
    target = loaded.model.encoder.item_embedding.align_target.clone()
    assert torch.equal(target, load_run(tmp_path / "cf").model.encoder.item_embedding.weight.detach())
    changed = {k: v + 1 for k, v in load_file(tmp_path / "cf" / "model.safetensors").items()}
    save_file(changed, tmp_path / "cf" / "model.safetensors")
    resumed = Trainer(None, tmp_path / "rat", resume=True, progress=False)
    assert torch.equal(resumed.model.encoder.item_embedding.align_target, target)
    assert torch.equal(load_run(tmp_path / "rat").model.encoder.item_embedding.align_target, target)
    with pytest.raises(ConfigError, match="align_run needs item_embeddings"):
        Trainer(build_config(overrides=["model=sasrec", *base, f"align_run={tmp_path / 'cf'}"]), tmp_path / "x", progress=False)
    assert np.isfinite(aligned.item())
