from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darec.data.batching import pad_right
from darec.serve import Recommender
from darec.serve.app import ServeSettings, create_app
from darec.train import Trainer, build_config


def test_top_k_follows_the_model_scores_in_original_ids(recommender: Recommender) -> None:
    history = recommender.item_ids[1:4]
    recs = recommender.top_k(history, k=5)
    seq = recommender.internal(history)
    items, lengths = pad_right([seq], recommender.model.max_len)
    with torch.no_grad():
        scores = recommender.model.score(torch.from_numpy(items), torch.from_numpy(lengths))[0]
    scores[0] = float("-inf")
    scores[torch.from_numpy(seq)] = float("-inf")
    expected = [recommender.item_ids[i] for i in scores.topk(5).indices.tolist()]
    assert [r["item"] for r in recs] == expected
    assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)


def test_seen_items_only_when_asked_and_k_capped_by_the_catalogue(recommender: Recommender) -> None:
    history = recommender.item_ids[1:4]
    catalogue = len(recommender.item_ids) - 1  # index 0 is padding
    everything = recommender.top_k(history, k=10 * catalogue, include_seen=True)
    assert len(everything) == catalogue and set(history) <= {r["item"] for r in everything}
    assert len(recommender.top_k(history, k=10 * catalogue)) == catalogue - len(history)


def test_bad_requests_say_what_is_wrong(recommender: Recommender) -> None:
    with pytest.raises(KeyError, match="unknown item id.*'nope'"):
        recommender.top_k(["nope"])
    with pytest.raises(ValueError, match="history is empty"):
        recommender.top_k([])


def test_bad_k_and_a_history_covering_the_catalogue_are_explained(recommender: Recommender) -> None:
    with pytest.raises(ValueError, match="k must be at least 1, got -1"):
        recommender.top_k(recommender.item_ids[1:3], k=-1)
    with pytest.raises(ValueError, match="nothing left to recommend: the history holds all"):
        recommender.top_k(recommender.item_ids[1:], k=5)
    assert len(recommender.top_k(recommender.item_ids[1:], k=5, include_seen=True)) == 5


def test_an_llm_run_served_compiled_answers_as_eager_and_batches_by_the_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "darec"
    Trainer(build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "dataset=synthetic-tiny",
                                    "max_len=20", "epochs=1", "batch_size=16"]), run_dir, progress=False).fit()
    eager = Recommender(run_dir, device="cpu")
    compiled = Recommender(run_dir, device="cpu", compile="on")  # warmed up: compiled before the first request
    assert compiled.compiled and not eager.compiled
    history = eager.item_ids[1:6]
    assert [r["item"] for r in compiled.top_k(history, k=10)] == [r["item"] for r in eager.top_k(history, k=10)]
    # A forward pass holds what the model evaluates at once (about 4k packed tokens on a CPU), at most 32.
    assert eager.batch_size == eager.model.eval_batch_size(torch.device("cpu")) == 4096 // (20 * 5)
    assert create_app(eager).state.scorer.max_batch == 32
    assert create_app(eager, ServeSettings(max_batch=3)).state.scorer.max_batch == 3
    eager.batch_size = 6
    assert create_app(eager).state.scorer.max_batch == 6
