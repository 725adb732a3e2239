from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from darec.data import load_dataset
from darec.data.batching import Batch, training_windows
from darec.device import apply_compile
from darec.models import build_model
from darec.models.llm import attention
from darec.models.llm.masking import item_attention_mask
from darec.train import build_config


def _block_mask(batch: int, tokens: int) -> torch.Tensor:
    """DARec's block mask over spans of 3 tokens, with padding at the end of the second row."""
    index = (torch.arange(tokens) // 3).repeat(batch, 1)
    index[1, -4:] = -1
    return item_attention_mask(index)


@pytest.mark.parametrize("shared_mask", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])  # 2: grouped-query attention, each key/value head serving 2 query heads
def test_the_masked_attention_gives_sdpas_output_and_gradients(monkeypatch: pytest.MonkeyPatch, shared_mask: bool,
                                                                 kv_heads: int) -> None:
    # Eager here (the compiled backward is the same function): what is checked is the arithmetic.
    monkeypatch.setattr(attention, "_compiled_user_backward", attention._user_backward)
    torch.manual_seed(0)
    mask = _block_mask(3, 17)
    mask = mask[:1] if shared_mask else mask  # one mask for every row broadcasts, as SDPA's does
    q = torch.randn(3, 4, 17, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(3, kv_heads, 17, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, lse = attention.masked_attention(q, k, v, mask, 8 ** -0.5)
    groups = 4 // kv_heads  # transformers' repeat_kv: query head h attends with key/value head h // groups
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1),
                                              attn_mask=mask)
    assert out.shape == (3, 17, 4, 8) and lse.shape == (3, 4, 17)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-10)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected.transpose(1, 2) * weights).sum(), (q, k, v))
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, atol=1e-10)


def test_the_ops_fake_kernels_match_them() -> None:
    """What a compiled graph is traced with (shapes, strides) is what the ops return."""
    torch.manual_seed(0)
    for kv_heads in (2, 1):  # 1: both query heads served by one key/value head
        q = torch.randn(2, 2, 6, 4, requires_grad=True)
        k, v = (torch.randn(2, kv_heads, 6, 4, requires_grad=True) for _ in range(2))
        torch.library.opcheck(attention.masked_attention, (q, k, v, _block_mask(2, 6), 0.5),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("overrides", [[], ["plan=[houlsby:8, prefix:4]"], ["mask=causal"]])
def test_a_compiled_darec_trains_through_it_with_the_gradients_of_sdpa(monkeypatch: pytest.MonkeyPatch,
                                                                      overrides: list[str]) -> None:
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return attention._user_backward(*args)

    monkeypatch.setattr(attention, "_compiled_user_backward", counted)
    data = load_dataset("synthetic-tiny")
    items, skip = training_windows(data.train_sequences(), 10)
    batch = Batch(torch.from_numpy(items[:4]), torch.from_numpy(skip[:4]))
    grads = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", *overrides]).model, data.n_items, 10)
        model.prepare(data)
        model.train()
        assert model.llm.config._attn_implementation == attention.NAME
        apply_compile(model, torch.device("cpu"), "on" if compiled else "off")
        model.loss(batch).backward()
        grads[compiled] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert bool(calls) == compiled  # eager, it is SDPA's own
    assert grads[False].keys() == grads[True].keys()
    for name, grad in grads[False].items():
        assert torch.allclose(grads[True][name], grad, atol=1e-4, rtol=1e-3), name
    # With no gradient wanted (evaluation, serving) the compiled layers run SDPA's forward alone.
    calls.clear()
    with torch.no_grad():
        model.eval().score(batch.items[:, :-1], (batch.items[:, :-1] > 0).sum(1))
    assert not calls


def test_a_masks_forms_are_built_once_and_again_when_the_mask_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention, "FORWARD_CHUNKS", 2)

    def additive(forms: attention._MaskForms) -> torch.Tensor:
        """The forward's chunks put back together, the keys past each chunk's end blocked."""
        tokens = forms.mask.size(-1)
        return torch.cat([F.pad(a, (0, tokens - end), value=float("-inf"))
                          for _, end, a in forms.forward_chunks(torch.float32)], 2)

    def expected(mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))

    forms, mask = attention._MaskForms(), _block_mask(2, 6)
    first, chunks = forms.of(mask).forward_chunks(torch.float32), forms.of(mask).user_chunks(2)
    assert forms.of(mask).forward_chunks(torch.float32) is first and forms.of(mask).user_chunks(2) is chunks  # every layer
    assert torch.equal(additive(forms), expected(mask)) and [end for _, end, _ in first] == [3, 6]
    assert [end for _, end, _ in chunks[0]] == [3, 6]
    other = mask.clone()
    other[0, 0, 5, :3] = False
    assert torch.equal(additive(forms.of(other)), expected(other))  # another mask
    other[0, 0, 5, :] = True  # the same tensor changed in place
    assert torch.equal(additive(forms.of(other)), expected(other))
    assert torch.equal(forms.of(other).user_chunks(2)[0][0][2], expected(other)[0, 0, :3, :3])
