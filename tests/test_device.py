from __future__ import annotations

import logging

import pytest
import torch

import darec.device as device_module
from darec.data.batching import Batch
from darec.device import apply_precision, resolve_precision
from darec.models import build_model
from darec.train import build_config

CPU = torch.device("cpu")


def _darec():
    config = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "lora_r=2"])
    torch.manual_seed(0)
    return build_model(config.model, 30, 8)


def test_auto_is_bf16_for_a_pretrained_backbone_on_a_cpu_with_native_bf16_only(monkeypatch: pytest.MonkeyPatch) -> None:
    sasrec = build_model(build_config(overrides=["model=sasrec"]).model, 30, 8)
    darec = _darec()
    monkeypatch.setattr(device_module, "fast_cpu_bf16", lambda: True)
    assert resolve_precision(CPU, "auto", darec) == "bf16"
    assert resolve_precision(CPU, "auto", sasrec) == "fp32"  # trained from scratch: nothing held in bf16
    assert resolve_precision(CPU, "auto") == "fp32" and resolve_precision(CPU, "fp32", darec) == "fp32"
    monkeypatch.setattr(device_module, "fast_cpu_bf16", lambda: False)
    assert resolve_precision(CPU, "auto", darec) == "fp32"  # emulated bf16 is slower
    assert resolve_precision(CPU, "bf16", darec) == "bf16"  # asked for: granted


def test_bf16_asked_for_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    for native, warned in ((True, False), (False, True)):
        monkeypatch.setattr(device_module, "fast_cpu_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="darec"):
            assert apply_precision(_darec(), CPU, "bf16") == "bf16"  # still granted
            apply_precision(_darec(), CPU, "auto")  # fp32 there: nothing to warn of
        assert ["emulated" in r.getMessage() for r in caplog.records] == [warned] * warned, native


def test_bf16_holds_the_backbone_in_bf16_and_the_rest_in_fp32() -> None:
    model = _darec()
    items, lengths = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        fp32_scores = model.eval().score(items, lengths)
    assert apply_precision(model, CPU, "bf16") == "bf16" and model.precision == "bf16"
    pretrained = model.rebuilt_state_keys()
    for name, p in model.named_parameters():
        assert p.dtype == (torch.bfloat16 if name in pretrained else torch.float32), name
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert all(p.dtype == torch.float32 for p in model.cf.parameters())  # the collaborative model is not the backbone
    with torch.no_grad():  # no autocast needed by the caller: the model runs its bf16 backbone under autocast itself
        scores = model.score(items, lengths)
    assert scores.dtype == torch.float32  # scoring in fp32
    assert torch.allclose(scores, fp32_scores, atol=0.05 * fp32_scores.abs().max().item())
    loss = model.train().loss(Batch(torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]]), torch.zeros(2, dtype=torch.long)))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_compile_is_regional_and_auto_skips_small_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    from darec.device import apply_compile

    model = _darec()
    assert not apply_compile(model, CPU, "auto")  # a tiny backbone: compiling would cost more than it saves
    assert not apply_compile(model, CPU, "off")
    monkeypatch.setattr(device_module, "COMPILE_MIN_PARAMETERS", 0)
    monkeypatch.setattr(device_module, "_compiler_works", lambda device: False)
    assert not apply_compile(model, CPU, "auto")  # no working compiler: eager
    sasrec = build_model(build_config(overrides=["model=sasrec"]).model, 30, 8)
    assert not apply_compile(sasrec, CPU, "on")  # nothing to compile
    items, lengths = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        eager = model.eval().score(items, lengths)
    keys = set(model.state_dict())
    assert apply_compile(model, CPU, "on")
    assert all(layer._compiled_call_impl is not None for layer in model.compile_regions())
    # Room for each layer to need its own compilations (layers of other adapter kinds guard on
    # other hooks; a mixed MixRec plan on two layers went past 8, then past 16, and ran eager).
    assert torch._dynamo.config.recompile_limit >= max(64, 8 * len(model.compile_regions()))
    assert set(model.state_dict()) == keys  # in place: checkpoints keep their names
    with torch.no_grad():
        assert torch.allclose(model.score(items, lengths), eager, atol=1e-4)
