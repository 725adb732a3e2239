from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darec.data import load_dataset
from darec.data.batching import Batch, training_windows
from darec.models import build_model
from darec.models.llm.adapters.moe import routers
from darec.serve import Recommender
from darec.train import Trainer, build_config, load_run
from darec.train.run import RunDir

TINY = ["model=mixrec", "backbone=tiny", "item_tokens=4"]
MIXED = "plan=['moe[lora:4, houlsby:8, ia3]:k=2', parallel:8]"


def _model(*overrides: str, n_items: int):
    return build_model(build_config(overrides=[*TINY, *overrides]).model, n_items, 10)


def test_defaults_give_every_layer_a_mixture() -> None:
    model = _model(n_items=20)
    assert model.plan == ["moe[lora:8, houlsby:16, parallel:16]:k=2"] * 2
    assert len(routers(model)) == 2
    assert model.describe() == "adapter plan by layer: 0-1 moe[lora:8, houlsby:16, parallel:16]:k=2"


@pytest.mark.parametrize("routing", ["token", "sequence"])
def test_later_items_do_not_change_earlier_states(routing: str) -> None:
    data = load_dataset("synthetic-tiny")
    model = _model(f"moe=moe[lora:4, houlsby:8]:k=1:routing={routing}", n_items=data.n_items)
    model.prepare(data)
    with torch.no_grad():  # experts that change the layer, so the routing matters
        for name, p in model.named_parameters():
            if ".moe." in name:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    a, b = torch.tensor([[3, 5, 7, 9, 11]]), torch.tensor([[3, 5, 7, 2, 4]])
    with torch.no_grad():
        sa, sb = model._states(a)[0], model._states(b)[0]
    assert torch.allclose(sa[0, :3], sb[0, :3], atol=1e-5) and not torch.allclose(sa[0, 3:], sb[0, 3:])


def test_the_balancing_loss_is_added_with_its_weight() -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:6]), torch.from_numpy(skip[:6]))
    losses = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = _model(f"lambda_balance={weight}", "cf_dropout=0", n_items=data.n_items).eval()
        model.prepare(data)
        losses[weight] = model.loss(batch)
        balance = torch.stack([r.balance for r in routers(model)]).mean()
    assert balance > 0.9  # 1 when balanced
    assert torch.allclose(losses[0.5] - losses[0.0], 0.5 * balance, atol=1e-5)


def test_trains_logs_expert_usage_and_reloads_exactly(tmp_path: Path) -> None:
    overrides = [*TINY, MIXED, "dataset=synthetic-tiny", "max_len=10", "epochs=2", "lr=5e-3", "batch_size=16", "patience=0"]
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "run", progress=False)
    trainer.fit()
    run = RunDir(tmp_path / "run")
    history = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert len(history) == 2
    for epoch in history:
        usage = epoch["model"]["expert_usage"]
        assert list(usage) == ["0"]  # the one mixture
        assert usage["0"]["experts"] == ["lora:4", "houlsby:8", "ia3"]
        assert sum(usage["0"]["share"]) == pytest.approx(1.0)
    assert run.figure("expert_usage").stat().st_size > 1000
    loaded = load_run(tmp_path / "run")
    items, lengths = torch.tensor([[3, 5, 7, 0], [2, 4, 6, 8]]), torch.tensor([3, 4])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model.score(items, lengths), loaded.model.score(items, lengths))
    recommender = Recommender(tmp_path / "run", device="cpu")
    assert len(recommender.top_k(recommender.item_ids[1:4], k=5)) == 5


def test_the_cli_trains_it_and_shows_the_plan_as_written(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from darec.cli import app

    result = CliRunner().invoke(app, ["train", "--model", "mixrec", "--dataset", "synthetic-tiny", "--run-dir", str(tmp_path / "r"),
                                      "--set", "backbone=tiny", "--set", "item_tokens=4", "--set", "epochs=1",
                                      "--set", "moe=moe[lora:4, ia3]:k=1"])
    assert result.exit_code == 0, result.output
    assert "0-1 moe[lora:4, ia3]:k=1" in " ".join(result.output.split())


def test_a_compiled_mixed_plan_does_not_compile_again_for_every_history_length() -> None:
    """The experts read their weights from the router, a tensor the layer holds as an attribute:
    its sizes must be dynamic, or each new batch size or length compiles the layers again (a
    2-layer plan ran past torch's recompile limit on scientific and went on uncompiled)."""
    from torch._dynamo.utils import counters

    from darec.device import apply_compile

    data = load_dataset("synthetic-small")
    model = _model(MIXED, n_items=data.n_items)
    model.prepare(data)
    apply_compile(model, torch.device("cpu"), "on")
    windows, _ = training_windows(data.train_sequences(), 10)
    model.eval()
    counters.clear()
    lengths = range(3, 11)
    with torch.no_grad():
        for length in lengths:
            items = torch.from_numpy(windows[:4, -length:]).clone()
            model.score(items, (items > 0).sum(1))
    # Two kinds of layer, each compiled for its first length and then for any (and the router's
    # hook): 6 graphs. With the router's weights fixed in size, 12: more than one a length.
    assert 0 < counters["stats"]["unique_graphs"] < len(lengths), dict(counters["stats"])
