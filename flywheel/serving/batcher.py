"""Adaptive micro-batching: concurrent requests share one `predict` call.

The worker takes everything queued (up to max_size rows). It waits up to max_wait only while more
requests are already on their way (inside `request()` but not yet queued), so a lone request never
waits and batches grow with concurrency. Each batch runs on one model snapshot: every response in it names the
same version. A replica runs one batcher per model; they share one predict thread. Each batcher has at most
one batch in flight, so that thread takes the models' batches in turn (measured with two models: fairer and
faster than a thread per model, whose threads fight over the GIL; docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flywheel.errors import NotReady
from flywheel.serving.inputs import Columns, joined
from flywheel.serving.served import ServedModel

log = logging.getLogger(__name__)
INLINE_MAX_ROWS = 32
#: With a verified fast path, requests up to this many rows predict on the event loop, unbatched (about 10 us
#: for one row, ~70 us for 64 rows, ~0.8 ms for 1,000 rows of the sample models: bench/fastpath.py); larger ones go
#: to the predict thread, where the compiled loop runs without the GIL beside the event loop. Handing a 1,000-row
#: request to that thread cost more than its prediction (c=4: 275 req/s through it, 311 inline).
FAST_INLINE_MAX_ROWS = 1024


@dataclass
class Result:
    version: int
    name: str
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None


@dataclass
class _Item:
    columns: Columns
    rows: int
    future: asyncio.Future[Result]


def frame(served: ServedModel, columns: Columns) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for f in served.schema.features:
        col = columns[f.name]
        data[f.name] = np.asarray(col, dtype="float64") if f.type == "numeric" else np.asarray(col, dtype=object)
    return pd.DataFrame(data, copy=False)


def predict(served: ServedModel, columns: Columns) -> tuple[list[Any], list[list[float]] | None]:
    """Run the verified fast predictor, or the Pipeline, on checked columns; probabilities for classifiers."""
    if served.fast is not None:
        out = served.fast.predict(columns)
        return out.predictions.tolist(), None if out.probabilities is None else out.probabilities.tolist()
    x = frame(served, columns)
    pred = served.model.predict(x)
    proba = served.model.predict_proba(x).tolist() if served.classes else None
    return pred.tolist(), proba


class Activity:
    """Prediction requests in flight in this process, across every model's batcher."""

    def __init__(self) -> None:
        self.requests = 0


class Batcher:
    """`on_batch(served, columns, predictions, seconds, requests)` after each predict call: the version, the
    rows, their outputs, the call's wall time and how many requests it answered."""

    def __init__(
        self,
        current: Callable[[], ServedModel | None],
        on_batch: Callable[[ServedModel, Columns, list[Any], float, int], None],
        *,
        max_size: int = 256,
        max_wait_ms: float = 2.0,
        name: str = "model",
        activity: Activity | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._current, self._on_batch = current, on_batch
        self.max_size, self.max_wait = max_size, max_wait_ms / 1000
        self.name = name
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._active = 0  # requests inside request(): queued, or still being read and checked
        self._activity = activity if activity is not None else Activity()
        self._own_executor = executor is None  # shut down here only if it is not shared
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None

    @property
    def activity(self) -> Activity:
        return self._activity

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def request(self) -> Batcher:
        """Wrap a whole prediction request (`with batcher.request():`), so the worker knows companions are on their
        way (the batcher is its own context manager: no object per request)."""
        return self

    def __enter__(self) -> None:
        self._active += 1
        self._activity.requests += 1

    def __exit__(self, *exc: object) -> None:
        self._active -= 1
        self._activity.requests -= 1

    async def submit(self, columns: Columns, rows: int) -> Result:
        served = self._current()
        if served is not None and served.fast is not None and rows <= FAST_INLINE_MAX_ROWS:
            # the verified fast path costs tens of microseconds for a few rows: less than a queue round trip
            # or a thread hop, so it runs right here and batching would only add latency
            began = time.perf_counter()
            preds, proba = predict(served, columns)
            try:
                self._on_batch(served, columns, preds, time.perf_counter() - began, 1)
            except Exception:  # the prediction stands; only the bookkeeping is lost
                log.exception("%s: after-batch bookkeeping failed", self.name)
            return _result(served, preds, proba, 0, rows)
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(columns, rows, fut))
        return await fut

    async def _collect(self) -> list[_Item]:
        items = [await self._queue.get()]
        size = items[0].rows
        deadline = time.monotonic() + self.max_wait
        while size < self.max_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if self._active <= len(items) or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            items.append(item)
            size += item.rows
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            served = self._current()
            if served is None:
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(NotReady("no model loaded yet"))
                continue
            merged = joined([it.columns for it in items])
            began = time.perf_counter()
            try:
                if len(items) == 1 and self._activity.requests <= 1 and items[0].rows <= INLINE_MAX_ROWS:
                    # alone in the process and small: predict inline; a hop to the predict thread costs ~4 ms
                    # of GIL hand-over here. Big requests, and any request while others (of any model) are
                    # in flight, go to the thread so the loop keeps reading them and /healthz answers.
                    preds, proba = predict(served, merged)
                else:  # company: the loop keeps reading requests while the batch runs
                    preds, proba = await loop.run_in_executor(self._executor, predict, served, merged)
            except Exception as e:  # a model that cannot predict this batch fails its requests, not the server
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            try:
                self._on_batch(served, merged, preds, time.perf_counter() - began, len(items))
            except Exception:  # bookkeeping must never end this task: every later request would hang
                log.exception("%s: after-batch bookkeeping failed", self.name)
            start = 0
            for it in items:
                if not it.future.done():
                    it.future.set_result(_result(served, preds, proba, start, start + it.rows))
                start += it.rows


def _result(served: ServedModel, preds: list[Any], proba: list[list[float]] | None, start: int, end: int) -> Result:
    """Rows start..end of a batch's outputs, as one request's result (probabilities by class name)."""
    probs = None
    if proba is not None:
        probs = [dict(zip(served.classes, p, strict=True)) for p in proba[start:end]]
    return Result(served.version, served.name, preds[start:end], probs)
