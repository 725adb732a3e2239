"""Chunked scoring of the catalogue: the same ranks and top-k as scoring it whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from darec.data import load_dataset
from darec.data.batching import pad_right
from darec.models import ModelConfig, SequentialRecommender, build_model
from darec.models import catalogue
from darec.models.catalogue import CatalogueScores, chunk_size, top_k
from darec.train.config import build_config
from darec.train.evaluate import evaluate_many, sample_negatives
from darec.train.metrics import rank_metrics, target_ranks


def reference(model: SequentialRecommender, histories: list[np.ndarray], targets: np.ndarray, exclude: bool,
              negatives: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Metrics from the whole [users, items] score matrix, ranked by ``target_ranks``."""
    items, lengths = pad_right(histories, model.max_len)
    with torch.no_grad():
        scores = model.eval().score(torch.from_numpy(items), torch.from_numpy(lengths)).float()
    y = torch.from_numpy(targets)
    if negatives is not None:
        candidates = torch.cat([y[:, None], torch.from_numpy(negatives)], 1)
        ranks = target_ranks(scores.gather(1, candidates), torch.zeros_like(y))
    else:
        scores[:, 0] = float("-inf")
        if exclude:
            for row, history in enumerate(histories):
                scores[row, torch.from_numpy(history)] = float("-inf")
        ranks = target_ranks(scores, y)
    return {name: value.numpy() for name, value in rank_metrics(ranks).items()}


def some_users(n_items: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    histories = [rng.integers(1, n_items + 1, size=rng.integers(1, 14)) for _ in range(37)]
    # Some targets repeat an item of the history (a repeat consumption: ranks last when excluded).
    targets = np.array([h[0] if i % 5 == 0 else rng.integers(1, n_items + 1) for i, h in enumerate(histories)])
    return histories, targets


def darec_model(n_items: int) -> SequentialRecommender:
    config = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4"]).model
    model = build_model(config, n_items, 10)
    model.prepare(load_dataset("synthetic-tiny"))
    return model


MODELS = {
    "sasrec": lambda n: build_model(build_config(overrides=["model=sasrec", "hidden_size=16"]).model, n, 10),
    "gru4rec": lambda n: build_model(build_config(overrides=["model=gru4rec", "hidden_size=16"]).model, n, 10),
    "bert4rec": lambda n: build_model(build_config(overrides=["model=bert4rec", "hidden_size=16"]).model, n, 10),
    "darec": darec_model,
}


@pytest.mark.parametrize("name", [*MODELS, "pop"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 0])
def test_chunked_ranks_equal_the_whole_matrix(name: str, chunk: int) -> None:
    torch.manual_seed(0)
    if name == "pop":  # integer counts: many ties, which must stay pessimistic across chunk borders
        data = load_dataset("synthetic-tiny")
        model = build_model(build_config(overrides=["model=pop"]).model, data.n_items, 10)
        model.prepare(data)
        n_items = data.n_items
    else:
        n_items = load_dataset("synthetic-tiny").n_items if name == "darec" else 150
        model = MODELS[name](n_items)
    histories, targets = some_users(n_items)
    negatives = sample_negatives(histories, targets, n_items, 20, seed=3)
    settings = [("full", False, None), ("full", True, None), ("sampled", True, negatives)]
    got = evaluate_many(model, histories, targets, settings, batch_size=16, per_user=True, chunk=chunk)
    for (protocol, exclude, negs), metrics in zip(settings, got):
        want = reference(model, histories, targets, exclude, negs)
        for metric, values in want.items():
            assert np.array_equal(metrics[metric], values), (protocol, exclude, metric)


class Stateless(SequentialRecommender):
    def __init__(self, n_items: int):
        super().__init__(ModelConfig("stateless"), n_items, max_len=5)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # the evaluator finds the device from the state


def test_ties_across_chunks_rank_the_target_below_all_its_equals() -> None:
    class Flat(Stateless):
        """Every item scores the same: the target ranks last among all items."""

        def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
            return torch.ones(items.size(0), 1)

        def item_vectors(self) -> tuple[Tensor, Tensor | None]:
            return torch.ones(self.n_items + 1, 1), None

    model = Flat(50)
    out = evaluate_many(model, [np.array([1, 2])], np.array([30]), [("full", False, None), ("full", True, None)],
                        per_user=True, chunk=8, ks=(50,))
    assert out[0]["mrr@50"][0] == pytest.approx(1 / 50)  # 49 others tie with it: rank 49, the last
    assert out[1]["mrr@50"][0] == pytest.approx(1 / 48)  # 2 seen items excluded: rank 47


def test_a_model_that_overrides_score_is_still_ranked_in_chunks() -> None:
    class Fixed(Stateless):
        def score(self, items: Tensor, lengths: Tensor) -> Tensor:
            return torch.arange(self.n_items + 1, dtype=torch.float).expand(items.size(0), -1)

    model = Fixed(40)
    histories, targets = [np.array([40, 39]), np.array([3])], np.array([38, 40])
    got = evaluate_many(model, histories, targets, [("full", True, None)], per_user=True, chunk=6)[0]
    assert got["mrr@5"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("chunk", [1, 5, 33, 0])
def test_top_k_in_chunks_equals_the_top_k_of_the_whole_matrix(chunk: int) -> None:
    torch.manual_seed(1)
    model = MODELS["sasrec"](300).eval()
    histories, _ = some_users(300)
    items, lengths = (torch.from_numpy(a) for a in pad_right(histories, 10))
    exclude = torch.from_numpy(pad_right(histories, 20)[0])
    with torch.no_grad():
        whole = model.score(items, lengths)
        whole[:, 0] = float("-inf")
        for row, history in enumerate(histories):
            whole[row, torch.from_numpy(history)] = float("-inf")
        want = whole.topk(12, dim=1)
        values, indices = top_k(CatalogueScores(model, items, lengths, chunk), 12, exclude)
    assert torch.equal(indices, want.indices) and torch.allclose(values, want.values, rtol=0, atol=1e-5)


def test_top_k_reaches_past_a_chunk_when_k_is_larger_than_it() -> None:
    model = MODELS["sasrec"](30).eval()
    with torch.no_grad():
        values, indices = top_k(CatalogueScores(model, torch.tensor([[1, 2]]), torch.tensor([2]), chunk=4), 31)
    assert sorted(indices[0].tolist()) == list(range(31)) and indices[0, -1] == 0 and values[0, -1] == float("-inf")


def test_chunk_size_is_bounded_by_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert chunk_size(512, 1_000_001, cpu, chunk=5000) == 5000
    assert chunk_size(512, 100, cpu, chunk=5000) == 100
    monkeypatch.setattr(catalogue, "free_memory", lambda device: 4 * 512 * 12 * 1_000)
    assert chunk_size(512, 1_000_001, cpu) == 1_000  # a quarter of the free memory
    monkeypatch.setattr(catalogue, "free_memory", lambda device: 1 << 40)
    assert chunk_size(512, 1_000_001, cpu) * 512 * 12 <= catalogue.CPU_CHUNK_BYTES  # cache-sized
    assert chunk_size(512, 1_000_001, torch.device("cuda")) * 512 * 12 <= catalogue.MAX_CHUNK_BYTES
    assert chunk_size(512, 1_000_001, torch.device("cuda")) > chunk_size(512, 1_000_001, cpu)
    assert chunk_size(1, 1_000, cpu) == 1_000
