from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darec.data import load_dataset
from darec.data.dataset import build_dataset
from darec.data.formats import RawData
from darec.models.llm.llmemb import (
    EmbedConfig, augment, embed_items, item_attributes, item_prompt, pca,
)

ATTRS = [("title", "Toy Story"), ("release year", "1995"), ("genre", "Animation, Comedy"), ("brand", "Pixar"), ("x", "y")]


def test_prompt_shape_and_value_cut() -> None:
    prompt = item_prompt(ATTRS[:2] + [("plot", "a" * 150)], "movie", max_chars=100)
    assert prompt == "The movie item has the following attributes:\ntitle is Toy Story; release year is 1995; plot is " + "a" * 100


def test_augmentation_gives_valid_different_views() -> None:
    rng = np.random.default_rng(0)
    views = [augment(ATTRS, rng) for _ in range(20)]
    for view in views:
        assert len(view) == 3 and len(set(view)) == 3 and set(view) <= set(ATTRS)  # 40% of 5 dropped
    assert len({tuple(v) for v in views}) > 1
    assert augment(ATTRS[:1], rng) == ATTRS[:1]  # never empty


def test_items_with_free_text_get_its_sentences() -> None:
    raw = RawData.from_sequences({"u": ["a", "b", "c"]}, {"a": "Sanding roll 80 grit. Industrial & Scientific. PORTER-CABLE."})
    data = build_dataset(raw, "t")
    assert item_attributes(data, 1) == [("description", "Sanding roll 80 grit"), ("description", "Industrial & Scientific"),
                                        ("description", "PORTER-CABLE")]


def test_pca_keeps_the_leading_directions() -> None:
    torch.manual_seed(0)
    x = torch.randn(50, 2) @ torch.tensor([[3.0, 0, 0, 0], [0, 1.0, 0, 0]])  # variance in two directions only
    table = torch.cat([torch.zeros(1, 4), x + 5])
    reduced = pca(table, 2)
    assert reduced.shape == (51, 2) and torch.equal(reduced[0], torch.zeros(2))
    assert torch.allclose(reduced[1:].var(0).sum(), x.var(0).sum(), rtol=1e-4)  # nothing of the variance is lost


@pytest.mark.parametrize("method", ["scft", "llm", "minilm"])
def test_embed_items(method: str) -> None:
    data = load_dataset("synthetic-tiny")
    config = EmbedConfig(method=method, backbone="tiny", epochs=2, batch_size=8, lr=1e-3, dim=8)
    table, summary = embed_items(data, config, progress=False)
    assert table.shape == (data.n_items + 1, 8) and torch.isfinite(table).all() and torch.equal(table[0], torch.zeros(8))
    assert len(torch.unique(table[1:], dim=0)) == data.n_items  # every item its own vector
    if method == "scft":
        assert summary["scft_steps"] == 2 * math.ceil(data.n_items / 8)
