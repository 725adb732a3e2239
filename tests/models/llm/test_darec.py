from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from darec.data import load_dataset
from darec.data.batching import Batch, pad_right, training_windows
from darec.models import build_model
from darec.train import Trainer, build_config, load_run

TINY = ["backbone=tiny", "item_tokens=4"]


def _model(*overrides: str, n_items: int = 40, max_len: int = 10):
    return build_model(build_config(overrides=["model=darec", *TINY, *overrides]).model, n_items, max_len)


def test_only_adapters_and_heads_train() -> None:
    model = _model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in trainable)  # the backbone is frozen


def test_later_items_do_not_change_earlier_states() -> None:
    data = load_dataset("synthetic-tiny")
    for mask in ("block", "causal"):
        model = _model(f"mask={mask}", n_items=data.n_items).eval()
        model.prepare(data)
        a = torch.tensor([[3, 5, 7, 9, 11]])
        b = torch.tensor([[3, 5, 7, 2, 4]])
        with torch.no_grad():
            sa, sb = model._states(a), model._states(b)
        assert torch.allclose(sa[0, :3], sb[0, :3], atol=1e-5) and not torch.allclose(sa[0, 3:], sb[0, 3:])


def test_learns_and_round_trips_through_a_run_directory(tmp_path: Path) -> None:
    overrides = ["model=darec", *TINY, "dataset=synthetic-tiny", "max_len=10", "epochs=3", "lr=5e-3", "batch_size=16", "patience=0"]
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "run", progress=False)
    losses = []
    trainer.fit(on_epoch_end=lambda e: losses.append(trainer.state["history"][-1]["loss"]))
    assert losses[-1] < losses[0]
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert any("lora_" in k for k in saved) and not any(k.startswith("llm.") and "lora_" not in k for k in saved)
    loaded = load_run(tmp_path / "run")
    histories, _ = trainer.dataset.split("test")
    items, lengths = pad_right(histories[:8], 10)
    args = torch.from_numpy(items), torch.from_numpy(lengths)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model.score(*args), loaded.model.score(*args))


def test_ablations_build_and_run() -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))
    for overrides in (["item_input=text"], ["item_input=id"], ["lambda_cf=0"], ["mask=causal"]):
        model = _model(*overrides, n_items=data.n_items)
        model.prepare(data)
        assert torch.isfinite(model.loss(batch))
    e4srec = build_model(build_config(overrides=["model=e4srec", *TINY]).model, data.n_items, 10)
    assert e4srec.config.item_input == "id" and e4srec.config.mask == "causal" and e4srec.config.lambda_cf == 0
    assert np.isfinite(e4srec.loss(batch).item())
