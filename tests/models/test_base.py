from __future__ import annotations

import math

import pytest
import torch

from darec.models.base import info_nce


def test_info_nce_on_a_hand_computed_case() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    # cosine logits are the identity; each row and column: -log(e^(1/t) / (e^(1/t) + 1))
    assert info_nce(a, b, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert info_nce(a, b, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # a learnable temperature (SCFT's exp(-log_scale)) gets a gradient
    log_scale = torch.tensor(1.0, requires_grad=True)
    loss = info_nce(a, b, (-log_scale).exp())
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-math.e)), rel=1e-6)
    loss.backward()
    assert log_scale.grad is not None and log_scale.grad.item() < 0  # sharper is better on matching pairs
