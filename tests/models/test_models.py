from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darec.data import load_dataset
from darec.data.batching import Batch, pad_right, training_windows
from darec.models import build_model
from darec.train.config import build_config
from darec.train.evaluate import evaluate

def _model(name: str, n_items: int = 30, max_len: int = 8, **overrides):
    config = build_config(overrides=[f"model={name}", *(f"{k}={v}" for k, v in overrides.items())]).model
    return build_model(config, n_items, max_len)


@pytest.mark.parametrize("name", ["bert4rec", "gru4rec", "pop", "sasrec"])
def test_score_shape(name: str) -> None:
    model = _model(name).eval()
    items, lengths = pad_right([np.array([1, 2, 3]), np.arange(1, 20)], 8)
    scores = model.score(torch.from_numpy(items), torch.from_numpy(lengths))
    assert scores.shape == (2, 31) and torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_padding_and_later_items_do_not_leak(name: str) -> None:
    """Right padding with a causal model: the score after a history ignores what comes after it."""
    model = _model(name).eval()
    a = torch.tensor([[4, 5, 6, 0, 0, 0, 0, 0]])
    b = torch.tensor([[4, 5, 6, 9, 9, 9, 9, 9]])
    length = torch.tensor([3])
    assert torch.allclose(model.score(a, length), model.score(b, length))


@pytest.mark.parametrize("name, loss", [("sasrec", "ce"), ("sasrec", "bce"), ("gru4rec", "ce"), ("gru4rec", "bce"), ("bert4rec", None)])
def test_models_learn_the_synthetic_structure(name: str, loss: str | None) -> None:
    torch.manual_seed(0)
    data = load_dataset("synthetic-tiny")
    extra = {"loss": loss} if loss else {}  # BERT4Rec has one loss, the cloze cross-entropy
    model = _model(name, data.n_items, 20, hidden_size=32, dropout=0.1, **extra)
    items, skip = training_windows(data.train_sequences(), 20, context=5)
    windows = Batch(torch.from_numpy(items), torch.from_numpy(skip))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = model.loss(windows).item()
    for _ in range(150):
        loss_value = model.loss(windows)
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    assert loss_value.item() < 0.8 * first
    # Overfits the training sequences: ranking each training item after its prefix.
    histories = [s[:k] for s in data.train_sequences() for k in range(1, len(s))]
    targets = np.array([s[k] for s in data.train_sequences() for k in range(1, len(s))])
    ndcg = evaluate(model, histories, targets)["ndcg@10"]
    chance = sum(1 / math.log2(r + 2) for r in range(10)) / data.n_items  # NDCG@10 of a random ranking
    assert ndcg > 3 * chance


def test_bert4rec_scores_with_a_mask_token_after_the_history() -> None:
    model = _model("bert4rec").eval()
    full = torch.arange(1, 9)[None]  # max_len items: the mask goes in the extra position
    assert model.score(full, torch.tensor([8])).shape == (1, 31)
