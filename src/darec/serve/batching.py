"""Micro-batching: concurrent requests are gathered into one forward pass on a worker
thread (never on the event loop) and answered separately. A batch is every request that
arrived while the last forward pass ran (up to ``max_batch``), so a lone request is scored
at once and batches grow with the load; ``max_wait_ms`` > 0 also waits that long for more.
With batching off, each request is its own forward pass on the same worker, so the two
are compared on equal terms."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from darec.serve.recommender import Recommender


MAX_BATCH = 32  # histories a forward pass holds at most, unless the model asks for fewer


@dataclass
class Pending:
    history: np.ndarray
    k: int
    include_seen: bool
    answer: asyncio.Future = field(repr=False)


class Scorer:
    """Scores histories for the service, batched or one by one; ``on_batch(size)`` sees every forward pass."""

    def __init__(self, recommender: Recommender, batching: bool = True, max_batch: int = MAX_BATCH, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int], None] = lambda size: None):
        self.recommender, self.batching, self.max_batch, self.max_wait = recommender, batching, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        # One worker: forward passes run one at a time (torch spreads each over the cores itself).
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darec-scorer")
        self.queue: asyncio.Queue[Pending] | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.batching:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._gather())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def score(self, histories: list[np.ndarray], k: int, include_seen: bool) -> list[list[dict[str, Any]]]:
        """Top-k for each history (internal ids): through the queue when batching, else at once."""
        if self.queue is None:
            return await self._forward([Pending(h, k, include_seen, None) for h in histories])
        loop = asyncio.get_running_loop()
        pending = [Pending(h, k, include_seen, loop.create_future()) for h in histories]
        for p in pending:
            self.queue.put_nowait(p)
        return list(await asyncio.gather(*(p.answer for p in pending)))

    async def _forward(self, batch: list[Pending]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(batch), self.max_batch):
            part = batch[start: start + self.max_batch]
            self.on_batch(len(part))
            out += await asyncio.get_running_loop().run_in_executor(
                self.worker, self.recommender.top_k_batch, [p.history for p in part], [p.k for p in part],
                [p.include_seen for p in part])
        return out

    async def _gather(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            try:
                results = await self._forward(batch)
            except Exception as exc:  # answered to each request of the batch; the loop goes on
                for p in batch:
                    if not p.answer.done():
                        p.answer.set_exception(exc)
                continue
            for p, recs in zip(batch, results):
                if not p.answer.done():  # a client that went away has cancelled its future
                    p.answer.set_result(recs)
