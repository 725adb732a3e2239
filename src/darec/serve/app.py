"""``darec serve``: a trained run behind HTTP (FastAPI).

    POST /recommend        {"history": [...], "k": 10, "exclude_seen": true} -> top-k items
    POST /recommend/batch  {"histories": [[...], ...], "k": 10}              -> top-k for each
    GET  /items?q=&limit=  catalogue search by id or title
    GET  /health           model, data set, item count, run
    GET  /metrics          Prometheus text: requests, latency, forward-pass batch sizes
    GET  /docs             OpenAPI docs;  GET /  a page to try it

Histories are original item ids, oldest first, or exact titles where the run has item
text. Bad requests get a 4xx and a reason: 422 for a body that does not fit (malformed
JSON, wrong types, unknown fields, an empty or too long history, k out of range, unknown
items, with close titles suggested), 413 for a body over the size limit, 401 without the
bearer token when one is set (every endpoint but /health).
"""

from __future__ import annotations

import gc
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from darec.errors import DarecError, InputError
from darec.serve.batching import MAX_BATCH, Scorer
from darec.serve.recommender import Recommender

ItemRef = Annotated[str | int, Field(description="An original item id, or an item's exact title.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(Strict):
    history: list[ItemRef] = Field(description="The user's items, oldest first.", examples=[["1", "50", "181"]])
    k: int = Field(10, ge=1, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Leave the history's own items out.")


class BatchRequest(Strict):
    histories: list[list[ItemRef]] = Field(description="Several users' histories, each oldest first.")
    k: int = Field(10, ge=1, description="How many items to return for each.")
    exclude_seen: bool = Field(True, description="Leave each history's own items out.")


class Recommendation(BaseModel):
    item: str = Field(description="Original item id.")
    title: str = Field(description="The item's text, where the run has it.")
    score: float


class RecommendResponse(BaseModel):
    items: list[Recommendation]


class BatchResponse(BaseModel):
    results: list[list[Recommendation]]


class Item(BaseModel):
    item: str
    title: str


class Health(BaseModel):
    status: str
    model: str
    dataset: str
    items: int
    run: str
    weights_sha256: str


@dataclass
class ServeSettings:
    token: str = ""  # bearer token; empty = no auth
    batching: bool = True
    max_batch: int = 0  # histories a forward pass holds at most; 0: 32, or fewer where the model asks (an LLM on a CPU)
    max_wait_ms: float = 0.0  # 0: a batch is what arrived while the last forward pass ran
    max_history: int = 1000  # entries in one history
    max_histories: int = 256  # histories in one batch request
    max_body: int = 1 << 20  # bytes


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # the app's own: several apps in one process do not mix
        self.requests = Counter("darec_requests", "Requests answered", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("darec_request_seconds", "Time to answer a request", ["endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch = Histogram("darec_batch_size", "Histories scored in one forward pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class Guard:
    """The token and body-size checks, and the request metrics, as plain ASGI middleware (Starlette's
    BaseHTTPMiddleware costs a task and a stream a request: a third of a small model's throughput)."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.expected = f"Bearer {settings.token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sent(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope["headers"])
        if self.settings.token and scope["path"] != "/health" and \
                not secrets.compare_digest(headers.get(b"authorization", b""), self.expected):
            refused = _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", **{"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, sent)
        elif (body := await self._body(headers, receive)) is None:
            await _error(413, f"the body is over {self.settings.max_body:,} bytes")(scope, receive, sent)
        else:
            await self.app(scope, body, sent)
        route = scope.get("route")  # set by the router on the scope it was handed
        endpoint = getattr(route, "path", "other")
        self.metrics.requests.labels(endpoint, str(status[0])).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def _body(self, headers: dict, receive: Any) -> Any:
        """The ``receive`` to hand on, or None for a body over the limit (declared, or counted as chunks come)."""
        size = headers.get(b"content-length")
        if size is not None:
            return receive if size.isdigit() and int(size) <= self.settings.max_body else None
        chunks, total = [], 0
        while True:
            message = await receive()
            chunks.append(message)
            total += len(message.get("body", b""))
            if total > self.settings.max_body:
                return None
            if not message.get("more_body"):
                break

        async def replay() -> dict:
            return chunks.pop(0) if chunks else await receive()

        return replay


def create_app(recommender: Recommender, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    max_batch = settings.max_batch or min(MAX_BATCH, recommender.batch_size)
    scorer = Scorer(recommender, settings.batching, max_batch, settings.max_wait_ms, metrics.batch.observe)
    has_text = any(recommender.titles[1:])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await scorer.start()
        # The run's objects (model, ids, titles) live as long as the service. Frozen, they are left out of
        # the collector's full passes, whose walks over them were the p99 tail under load (bench/serve_load.py).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        await scorer.stop()

    app = FastAPI(title="darec", version="1", lifespan=lifespan,
                  description=f"Top-k next items from the run {recommender.run_dir.name} ({recommender.config.model.name}).")
    app.state.scorer, app.state.metrics = scorer, metrics

    app.add_middleware(Guard, settings=settings, metrics=metrics)

    @app.exception_handler(DarecError)
    async def bad_input(request: Request, exc: DarecError) -> JSONResponse:
        return _error(422, str(exc))

    def histories(raw: list[list[str | int]]) -> list:
        for history in raw:
            if len(history) > settings.max_history:
                raise InputError(f"a history of {len(history)} items is over the limit of {settings.max_history}")
        return [recommender.internal([str(h) for h in history], titles=has_text) for history in raw]

    async def answer(raw: list[list[str | int]], k: int, exclude_seen: bool) -> list[list[dict[str, Any]]]:
        recommender.check_k(k)
        results = await scorer.score(histories(raw), k, not exclude_seen)
        if not all(results):
            raise recommender.nothing_left()
        return results

    # The handlers return their JSON as built (the response models document it): validating our own
    # output again cost more than the model's forward pass for a small model.
    @app.post("/recommend", response_model=RecommendResponse, summary="Top-k next items for one history")
    async def recommend(body: RecommendRequest) -> JSONResponse:
        return JSONResponse({"items": (await answer([body.history], body.k, body.exclude_seen))[0]})

    @app.post("/recommend/batch", response_model=BatchResponse, summary="Top-k next items for several histories")
    async def recommend_batch(body: BatchRequest) -> JSONResponse:
        if not body.histories or len(body.histories) > settings.max_histories:
            raise InputError(f"give 1 to {settings.max_histories} histories, got {len(body.histories)}")
        return JSONResponse({"results": await answer(body.histories, body.k, body.exclude_seen)})

    # The catalogue as searched, folded once (the page searches at every keystroke).
    folded = [(item.casefold(), title.casefold()) for item, title in zip(recommender.item_ids[1:], recommender.titles[1:])]

    @app.get("/items", response_model=list[Item], summary="Search the catalogue by id or title")
    async def items(q: Annotated[str, Query(max_length=200)] = "",
                    limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict[str, str]]:
        needle, found = q.casefold(), []
        for i, (item, title) in enumerate(folded, start=1):
            if needle in item or needle in title:
                found.append({"item": recommender.item_ids[i], "title": recommender.titles[i]})
                if len(found) == limit:
                    break
        return found

    state = recommender.run_state

    @app.get("/health", response_model=Health, summary="What is served")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": recommender.config.model.name, "dataset": recommender.config.data.dataset,
                "items": recommender.n_items, "run": recommender.run_dir.name, "weights_sha256": state.get("best_sha256") or ""}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = files("darec.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app
