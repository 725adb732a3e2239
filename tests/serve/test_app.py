from __future__ import annotations

import asyncio

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from darec.serve import Recommender
from darec.serve.app import ServeSettings, create_app

from .conftest import served


def same(a: list[list[dict]], b: list[list[dict]]) -> bool:
    """The same items in the same order, scores equal up to float rounding (a batch pads rows, which
    changes the order of floating-point sums)."""
    return [[(r["item"], r["title"]) for r in x] for x in a] == [[(r["item"], r["title"]) for r in x] for x in b] and all(
        r["score"] == pytest.approx(q["score"], rel=1e-5, abs=1e-6) for x, y in zip(a, b) for r, q in zip(x, y))


@pytest.fixture(scope="module")
def client(recommender: Recommender):
    with TestClient(create_app(recommender, ServeSettings(max_history=30, max_body=4000))) as client:
        yield client


def test_recommend_equals_top_k(client: TestClient, recommender: Recommender) -> None:
    history = recommender.item_ids[1:4]
    response = client.post("/recommend", json={"history": history, "k": 5})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == recommender.top_k(history, k=5)
    seen = client.post("/recommend", json={"history": history, "k": 5, "exclude_seen": False}).json()["items"]
    assert seen == recommender.top_k(history, k=5, include_seen=True)


def test_histories_may_be_titles_and_numbers(client: TestClient, recommender: Recommender) -> None:
    ids = recommender.item_ids[1:4]
    by_title = [recommender.titles[recommender.index[i]] for i in ids]
    assert all(by_title)  # synthetic-tiny has item text
    expected = client.post("/recommend", json={"history": ids}).json()
    assert client.post("/recommend", json={"history": by_title}).json() == expected
    numeric = [i for i in recommender.item_ids[1:] if i.isdigit()]
    if numeric:  # ids that look like numbers may come as JSON numbers
        assert client.post("/recommend", json={"history": [int(numeric[0])]}).status_code == 200


def test_batch_answers_each_history_as_alone(client: TestClient, recommender: Recommender) -> None:
    histories = [recommender.item_ids[1:4], recommender.item_ids[5:6], recommender.item_ids[2:9]]
    response = client.post("/recommend/batch", json={"histories": histories, "k": 3})
    assert response.status_code == 200, response.text
    assert same(response.json()["results"], [recommender.top_k(h, k=3) for h in histories])


def test_items_health_metrics_docs_and_page(client: TestClient, recommender: Recommender) -> None:
    title = recommender.titles[7]
    found = client.get("/items", params={"q": title[:6].upper(), "limit": 50}).json()
    assert {"item": recommender.item_ids[7], "title": title} in found
    assert len(client.get("/items", params={"limit": 3}).json()) == 3
    health = client.get("/health").json()
    assert health["model"] == "sasrec" and health["items"] == len(recommender.item_ids) - 1 and len(health["weights_sha256"]) == 64
    client.post("/recommend", json={"history": recommender.item_ids[1:3]})
    text = client.get("/metrics").text
    assert 'darec_requests_total{endpoint="/recommend",status="200"}' in text and "darec_batch_size_bucket" in text
    assert "darec_request_seconds_bucket" in text
    assert "/recommend/batch" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text


@pytest.mark.parametrize("body, status, reason", [
    ('{"history": ["i1", ', 422, "JSON decode error"),
    ({"history": "i1"}, 422, "valid list"),
    ({"history": ["i1"], "k": "ten"}, 422, "valid integer"),
    ({"history": ["nope", "i1", "also-not"]}, 422, "unknown item id(s) 'nope', 'also-not'"),
    ({"history": []}, 422, "history is empty"),
    ({"history": ["i1"], "k": 0}, 422, "greater than or equal to 1"),
    ({"history": ["i1"], "k": 100000}, 422, "more than the"),
    ({"history": ["i1"] * 31}, 422, "over the limit of 30"),
    ({"history": ["i1"], "colour": "red"}, 422, "Extra inputs are not permitted"),
    ({"history": ["i1"] * 800}, 413, "over 4,000 bytes"),
    (iter([b'{"history": [', b'"i1", ' * 800, b'"i1"]}']), 413, "over 4,000 bytes"),  # chunked: no content-length
    ({"histories": []}, 422, "give 1 to 256 histories"),
])
def test_bad_requests_get_a_4xx_and_a_reason(client: TestClient, body: object, status: int, reason: str) -> None:
    path = "/recommend/batch" if isinstance(body, dict) and "histories" in body else "/recommend"
    response = (client.post(path, json=body) if isinstance(body, dict)
                else client.post(path, content=body, headers={"content-type": "application/json"}))
    assert response.status_code == status, response.text
    assert reason in response.text
    assert "Traceback" not in response.text


def test_a_title_that_is_close_is_suggested(client: TestClient, recommender: Recommender) -> None:
    title = recommender.titles[3]
    response = client.post("/recommend", json={"history": [title[:-1] + "#"]})
    assert response.status_code == 422 and f"did you mean {title!r}" in response.json()["detail"]


def test_a_token_closes_everything_but_health(recommender: Recommender) -> None:
    with TestClient(create_app(recommender, ServeSettings(token="s3cret"))) as client:
        assert client.get("/health").status_code == 200
        for method, path in (("post", "/recommend"), ("get", "/items"), ("get", "/metrics"), ("get", "/"), ("get", "/docs")):
            response = getattr(client, method)(path)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
        wrong = client.post("/recommend", json={"history": ["i1"]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.post("/recommend", json={"history": recommender.item_ids[1:3]}, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_are_answered_as_alone(recommender: Recommender, batching: bool) -> None:
    app = create_app(recommender, ServeSettings(batching=batching, max_batch=8, max_wait_ms=20))
    histories = [recommender.item_ids[1 + i % 7: 2 + i % 7 + i % 5] for i in range(24)]

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*(client.post("/recommend", json={"history": h, "k": 4}) for h in histories))

    responses = asyncio.run(run())
    assert same([r.json()["items"] for r in responses], [recommender.top_k(h, k=4) for h in histories])
    sizes = app.state.metrics.batch.collect()[0].samples
    count = next(s.value for s in sizes if s.name == "darec_batch_size_count")
    total = next(s.value for s in sizes if s.name == "darec_batch_size_sum")
    assert total == 24
    assert (count < 24) if batching else (count == 24)  # batched: fewer forward passes than requests


def test_darec_serve_answers_on_loopback(recommender: Recommender) -> None:
    with served(recommender.run_dir, "--token", "t0k") as (url, printed):
        assert httpx.get(f"{url}/health").json()["items"] == recommender.n_items
        assert httpx.post(f"{url}/recommend", json={"history": recommender.item_ids[1:3]}).status_code == 401
        answer = httpx.post(f"{url}/recommend", json={"history": recommender.item_ids[1:3], "k": 2},
                            headers={"Authorization": "Bearer t0k"})
        assert same([answer.json()["items"]], [recommender.top_k(recommender.item_ids[1:3], k=2)])
    assert f"on {url}" in " ".join(" ".join(printed).split())


LLM = ["backbone=tiny", "item_tokens=4"]


@pytest.mark.parametrize("overrides", [["model=gru4rec"], ["model=bert4rec"], ["model=pop"], ["model=darec", *LLM],
                                       ["model=e4srec", *LLM], ["model=mixrec", *LLM], ["model=sasrec", "item_embeddings=FILE"]],
                         ids=["gru4rec", "bert4rec", "pop", "darec", "e4srec", "mixrec", "llmemb-sasrec"])
def test_every_model_is_served(overrides: list[str], tmp_path) -> None:
    import torch

    from darec.data import load_dataset
    from darec.data.item_embeddings import save_item_embeddings
    from darec.train import Trainer, build_config

    data = load_dataset("synthetic-tiny", seed=42)  # the trainer's default seed: the items a run sees
    save_item_embeddings(tmp_path / "items.safetensors", torch.randn(data.n_items + 1, 12), data)
    overrides = [o.replace("FILE", str(tmp_path / "items.safetensors")) for o in overrides]
    Trainer(build_config(overrides=[*overrides, "dataset=synthetic-tiny", "max_len=10", "epochs=1"]), tmp_path / "run",
            progress=False).fit()
    recommender = Recommender(tmp_path / "run", device="cpu")
    with TestClient(create_app(recommender)) as client:
        history = recommender.item_ids[2:5]
        response = client.post("/recommend", json={"history": history, "k": 4})
        assert response.status_code == 200, response.text
        assert same([response.json()["items"]], [recommender.top_k(history, k=4)])
        assert client.get("/health").json()["model"] == overrides[0].split("=")[1]
