from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from darec.config import ConfigError
from darec.data import load_dataset
from darec.data.batching import Batch, pad_right, training_windows
from darec.models import build_model
from darec.train import Trainer, build_config, load_run
from darec.train.evaluate import evaluate


def chance_ndcg10(n_items: int) -> float:
    """Expected NDCG@10 of a uniformly random ranking."""
    return float(sum(1 / np.log2(r + 2) for r in range(10)) / n_items)

TINY = ["backbone=tiny", "item_tokens=4"]


def _model(*overrides: str, n_items: int = 40, max_len: int = 10):
    return build_model(build_config(overrides=["model=darec", *TINY, *overrides]).model, n_items, max_len)


def test_only_adapters_and_heads_train() -> None:
    model = _model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in trainable)  # the backbone is frozen


@pytest.mark.parametrize("mask,plan", [("block", "[]"), ("causal", "[]"), ("semantic", "[]"), ("block", "[prefix:3, houlsby:8]")])
def test_later_items_do_not_change_earlier_states(mask: str, plan: str) -> None:
    data = load_dataset("synthetic-tiny")
    model = _model(f"mask={mask}", f"plan={plan}", n_items=data.n_items).eval()
    model.prepare(data)
    a = torch.tensor([[3, 5, 7, 9, 11]])
    b = torch.tensor([[3, 5, 7, 2, 4]])
    with torch.no_grad():
        sa, sb = model._states(a)[0], model._states(b)[0]
    assert torch.allclose(sa[0, :3], sb[0, :3], atol=1e-5) and not torch.allclose(sa[0, 3:], sb[0, 3:])


def test_spans_are_packed_without_padding_inside_a_row() -> None:
    model = _model("item_tokens=6", n_items=5)
    lengths = [2, 6, 0, 4, 1, 3]
    for item, n in enumerate(lengths):
        model.item_text[item, :n] = torch.arange(n) + 10 * item + 10
        model.item_text_len[item] = n
    packed = model._pack(torch.tensor([[1, 3, 0], [4, 0, 0]]))
    # row 0: item 1 (6 title tokens, item token), item 3 (4 + 1); row 1: item 4 (1 + 1), then padding
    assert packed.ids.shape == (2, 12)
    assert packed.ids[0, :6].tolist() == [20, 21, 22, 23, 24, 25] and packed.ids[0, 7:11].tolist() == [40, 41, 42, 43]
    assert packed.item_pos.tolist()[0][:2] == [6, 11] and packed.item_pos[1, 0] == 1
    assert packed.item_index[0].tolist() == [0] * 7 + [1] * 5
    assert packed.item_index[1].tolist() == [0, 0] + [-1] * 10


def test_a_row_scores_the_same_alone_and_in_a_batch() -> None:
    data = load_dataset("synthetic-tiny")
    for mask in ("block", "semantic"):
        model = _model(f"mask={mask}", n_items=data.n_items).eval()
        model.prepare(data)
        items = torch.tensor([[3, 5, 7, 9], [2, 4, 0, 0]])
        lengths = torch.tensor([4, 2])
        with torch.no_grad():
            together = model.score(items, lengths)
            alone = torch.cat([model.score(items[:1], lengths[:1]), model.score(items[1:, :2], lengths[1:])])
        assert torch.allclose(together, alone, atol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_semantic_tokens_read_their_own_item_text_not_its_id(layers: int) -> None:
    data = load_dataset("synthetic-tiny")
    model = _model("mask=semantic", f"keep_layers={layers}", n_items=data.n_items).eval()
    model.prepare(data)
    with torch.no_grad():
        _, a = model._states(torch.tensor([[3, 5, 7]]))
        _, b = model._states(torch.tensor([[8, 5, 2]]))
        model.cf.encoder.item_embedding.weight[5] += 1.0  # the ID token of item 5 follows its semantic token
        _, c = model._states(torch.tensor([[3, 5, 7]]))
    assert torch.allclose(a[0, 1], c[0, 1], atol=1e-5)  # never sees its own ID token, even through its text
    # One layer: the item's text alone. Deeper, its text tokens have read the earlier items.
    assert torch.allclose(a[0, 1], b[0, 1], atol=1e-5) == (layers == 1)
    assert not torch.allclose(a[0, 0], b[0, 0])
    with pytest.raises(ConfigError, match="semantic needs item text"):
        _model("mask=semantic", "item_input=id")


@pytest.mark.parametrize("plan", ["[lora:8, lora:8]", "[houlsby:8, ia3]", "[parallel:8, prefix:4]"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(plan: str) -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))
    results = []
    for checkpointing in ("false", "true"):
        torch.manual_seed(0)
        model = _model(f"plan={plan}", f"gradient_checkpointing={checkpointing}", n_items=data.n_items)
        model.prepare(data)
        model.train()
        torch.manual_seed(1)
        loss = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.llm.named_parameters() if p.requires_grad}))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    assert grad_a.keys() == grad_b.keys() and all(torch.allclose(grad_a[n], grad_b[n], atol=1e-5) for n in grad_a)


def test_a_pretrained_sasrec_is_kept_in_the_loop(tmp_path: Path) -> None:
    base = ["dataset=synthetic-tiny", "max_len=10", "epochs=1", "batch_size=16", "patience=0"]
    Trainer(build_config(overrides=["model=sasrec", "hidden_size=32", *base]), tmp_path / "cf", progress=False).fit()
    cf = load_file(tmp_path / "cf" / "model.safetensors")
    overrides = ["model=darec", *TINY, *base, "cf_hidden=32", f"cf_run={tmp_path / 'cf'}", "cf_freeze=true"]
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "darec", progress=False)
    assert all(torch.equal(trainer.model.cf.state_dict()[k].cpu(), v) for k, v in cf.items())
    trainer.model.train()
    assert trainer.model.training and not trainer.model.cf.training  # no dropout in a fixed teacher
    trainer.fit()
    assert all(torch.equal(trainer.model.cf.state_dict()[k].cpu(), v) for k, v in cf.items())  # frozen: unchanged
    with pytest.raises(ConfigError, match=r"cf_run: .* \(hidden_size=64, n_layers=2, max_len=10\)"):  # the shape it has
        Trainer(build_config(overrides=["model=darec", *TINY, *base, f"cf_run={tmp_path / 'cf'}"]), tmp_path / "bad",
                progress=False)
    with pytest.raises(ConfigError, match=r"n_layers=3"):
        Trainer(build_config(overrides=["model=darec", *TINY, *base, "cf_hidden=32", "cf_layers=3", f"cf_run={tmp_path / 'cf'}"]),
                tmp_path / "bad3", progress=False)
    # The finished run carries the SASRec it started from: it loads and scores with that run gone.
    shutil.rmtree(tmp_path / "cf")
    loaded = load_run(tmp_path / "darec", device="cpu")
    items, lengths = pad_right(trainer.dataset.split("test")[0][:8], 10)
    trainer.model.eval()
    with torch.no_grad():
        want = trainer.model.score(torch.from_numpy(items).to(trainer.device), torch.from_numpy(lengths).to(trainer.device))
        assert torch.allclose(want.cpu(), loaded.model.score(torch.from_numpy(items), torch.from_numpy(lengths)), atol=1e-5)
    with pytest.raises(ConfigError, match="model.cf_run: .*not a run directory"):  # names the setting at fault
        Trainer(build_config(overrides=overrides), tmp_path / "gone", progress=False)


def test_learns_and_round_trips_through_a_run_directory(tmp_path: Path) -> None:
    overrides = ["model=darec", *TINY, "dataset=synthetic-tiny", "max_len=10", "epochs=3", "lr=5e-3", "batch_size=16", "patience=0"]
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "run", progress=False)
    losses = []
    trainer.fit(on_epoch_end=lambda e: losses.append(trainer.state["history"][-1]["loss"]))
    assert losses[-1] < losses[0]
    # It fits its training data: the last training item from the items before it, far above chance.
    sequences = trainer.dataset.train_sequences()
    fit = evaluate(trainer.model, [s[:-1] for s in sequences], np.array([s[-1] for s in sequences]))
    assert fit["ndcg@10"] > 5 * chance_ndcg10(trainer.dataset.n_items)
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert any("lora_" in k for k in saved) and not any(k.startswith("llm.") and "lora_" not in k for k in saved)
    loaded = load_run(tmp_path / "run")
    histories, _ = trainer.dataset.split("test")
    items, lengths = pad_right(histories[:8], 10)
    args = torch.from_numpy(items).to(trainer.device), torch.from_numpy(lengths).to(trainer.device)  # on CUDA where present
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model.score(*args), loaded.model.score(*args))


def test_ablations_build_and_run() -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))
    for overrides in (["item_input=text"], ["item_input=id"], ["lambda_cf=0"], ["mask=causal"], ["mask=semantic"]):
        model = _model(*overrides, n_items=data.n_items)
        model.prepare(data)
        assert torch.isfinite(model.loss(batch))
    e4srec = build_model(build_config(overrides=["model=e4srec", *TINY]).model, data.n_items, 10)
    assert e4srec.config.item_input == "id" and e4srec.config.mask == "causal" and e4srec.config.lambda_cf == 0
    assert np.isfinite(e4srec.loss(batch).item())


@pytest.mark.parametrize("overrides", [[], ["lambda_cf=0"], ["lambda_cf=0", "head=linear"], ["item_input=text", "lambda_cf=0", "head=linear"],
                                       ["model=e4srec"], ["cf_freeze=true"], ["model=mixrec"], ["head=residual"],
                                       ["head=residual", "lambda_cf=0"], ["head=residual", "cf_freeze=true", "mask=semantic"]])
def test_every_trained_parameter_gets_a_gradient_and_no_other_is_trained(overrides: list[str]) -> None:
    # What a configuration never reads is not trained: trainable counts are exact, and several
    # processes need not look for unused parameters every step (only a router may skip some).
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    model = _model(*overrides, n_items=data.n_items)
    model.prepare(data)
    model.loss(Batch(torch.from_numpy(items[:8]), torch.from_numpy(skip[:8]))).backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and {n for n, p in model.named_parameters() if p.grad is not None} == trained
    assert model.skips_parameters() == (model.config.name == "mixrec")


def test_items_head_scores_in_the_collaborative_space() -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    model = _model("head=items", "lambda_cf=0", n_items=data.n_items)
    model.prepare(data)
    assert model.head is None
    model.loss(Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))).backward()
    # Without the alignment loss only the head reaches the projection and the CF item table's unseen rows.
    assert model.user_proj.weight.grad.abs().sum() > 0
    seen = torch.zeros(data.n_items + 1, dtype=torch.bool)
    seen[torch.from_numpy(items[:4]).flatten()] = True
    assert model.cf.encoder.item_embedding.weight.grad[~seen].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        history, lengths = torch.tensor([[3, 5, 7]]), torch.tensor([3])
        state = model._states(history)[0][:, -1]
        expected = model.user_proj(state) @ model.cf.encoder.item_embedding.weight.T
        assert torch.allclose(model.score(history, lengths), expected, atol=1e-5)


def test_residual_head_starts_at_the_sasrecs_scores_and_learns_from_the_llm() -> None:
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:8]), torch.from_numpy(skip[:8]))
    model = _model("head=residual", n_items=data.n_items)
    model.prepare(data)
    history, lengths = torch.tensor([[3, 5, 7]]), torch.tensor([3])
    with torch.no_grad():
        assert torch.equal(model.eval().score(history, lengths), model.cf.score(history, lengths))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model.train().loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        model.eval()
        other = torch.tensor([[9, 2, 7]])  # the SASRec's state differs too; the LLM's part is what is checked
        llm = model.residual(model._states(history)[0][:, -1])
        assert llm.abs().sum() > 0
        expected = (model.cf.user_states(history, lengths) + llm) @ model.cf.encoder.item_embedding.weight.T
        assert torch.allclose(model.score(history, lengths), expected, atol=1e-5)
        assert not torch.allclose(model.score(other, lengths), model.cf.score(other, lengths))


def test_bf16_autocast_trains_and_scores_in_float32() -> None:
    from darec.device import autocast

    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    model = _model(n_items=data.n_items)
    model.prepare(data)
    with autocast(torch.device("cpu"), "bf16"):
        loss = model.loss(Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4])))
        scores = model.score(torch.tensor([[3, 5, 7]]), torch.tensor([3]))
    loss.backward()
    assert torch.isfinite(loss) and scores.dtype == torch.float32
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_a_layer_wise_plan_trains_saves_and_reloads(tmp_path: Path) -> None:
    from darec.train.checkpoint import load_model_state, model_state, save_tensors

    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:8]), torch.from_numpy(skip[:8]))
    model = _model("plan=[houlsby:8, ia3]", n_items=data.n_items)
    model.prepare(data)
    assert model.describe() == "adapter plan by layer: 0 houlsby:8 | 1 ia3"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    saved = model_state(model)
    assert any("adapter_attention" in k for k in saved) and any("ia3" in k for k in saved)
    assert not any(k.startswith("llm.") and "adapter" not in k and "ia3" not in k for k in saved)  # no frozen weights
    save_tensors(tmp_path / "model.safetensors", saved)
    fresh = _model("plan=[houlsby:8, ia3]", n_items=data.n_items)
    load_model_state(fresh, tmp_path / "model.safetensors")
    args = torch.tensor([[3, 5, 7, 9]]), torch.tensor([4])
    with torch.no_grad():
        assert torch.allclose(model.eval().score(*args), fresh.eval().score(*args), atol=1e-6)
    with pytest.raises(ConfigError, match="1 entries for 2 decoder layers"):
        _model("plan=[lora:4]")


def test_weights_saved_with_an_adapter_per_lora_rank_still_load() -> None:
    model = _model("plan=[lora:4, lora:2]")
    saved = {n: v for n, v in model.state_dict().items() if n not in model.rebuilt_state_keys()}
    ranks = {"0": 4, "1": 2}
    old = {(n.replace(".default.", f".lora_r{ranks[n.split('layers.')[1][0]]}_a2_d0_05.") if ".lora_" in n else n): v
           for n, v in saved.items()}
    assert any("lora_r2_a2_d0_05" in n for n in old)
    fresh = _model("plan=[lora:4, lora:2]")
    missing, unexpected = fresh.load_state_dict(old, strict=False)
    assert not unexpected and not set(missing) - fresh.rebuilt_state_keys()
    assert all(torch.equal(fresh.state_dict()[n], v) for n, v in saved.items())


def test_evaluation_batch_is_about_4k_packed_tokens_on_a_cpu() -> None:
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert _model(max_len=50).eval_batch_size(cpu) == 4096 // (50 * (4 + 1))  # title tokens + the item token
    assert _model("mask=semantic", max_len=50).eval_batch_size(cpu) == 4096 // (50 * 6)  # + the semantic token
    assert _model("item_input=id", max_len=5).eval_batch_size(cpu) == 512  # short histories: the usual cap
    assert _model(max_len=50).eval_batch_size(meta) == 512  # off the CPU: not measured, the base class's choice
