"""Which version answers a request during a rollout, and the shadow runs (docs/rollouts.md).

- canary: a share of requests is answered by the candidate through its own batcher. The choice is sticky per
  API key (a hash of the key id and the rollout id below the share), random for requests without one. If the
  candidate raises, production answers the request and the error counts against the candidate: no client
  request fails because of it.
- shadow: production answers every request. For a sampled share of production's predict calls, the same rows
  are queued and the candidate runs them after the responses are on their way: one predict call per production
  call, on the same rows, so both versions' latencies measure the same work. The queue is bounded in rows; when
  it is full, new samples are dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flywheel.serving.batcher import FAST_INLINE_MAX_ROWS, Batcher, Result, predict
from flywheel.serving.inputs import Columns, joined
from flywheel.serving.served import HostView, ServedModel, TrialView
from flywheel.serving.trial import Active

log = logging.getLogger(__name__)
SHADOW_BURST_SECONDS = 0.002
WARN_EVERY_SECONDS = 10.0


def sticky_share(rollout_key: str, client: str) -> float:
    """A stable number in [0, 1) for this client in this rollout."""
    digest = hashlib.blake2b(f"{rollout_key}\n{client}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def to_candidate(active: Active, client: str | None) -> bool:
    if active.rollout.mode != "canary":
        return False
    draw = sticky_share(active.key, client) if client else random.random()
    return draw < active.rollout.share


@dataclass
class _Sample:
    active: Active
    columns: Columns
    predictions: list[Any]
    requests: int


class Router:
    """One per served model: the candidate's batcher (canary) and the shadow queue and its worker."""

    def __init__(
        self, host: HostView, production: Batcher, executor: ThreadPoolExecutor, *, queue_rows: int = 65_536
    ) -> None:
        self.host, self.production, self.executor = host, production, executor
        self.name = host.name
        self.queue_rows = queue_rows
        self.candidate = Batcher(
            self._candidate,
            self._on_candidate_batch,
            max_size=production.max_size,
            max_wait_ms=production.max_wait * 1000,
            name=f"{self.name}-candidate",
            activity=production.activity,  # the process's requests in flight: a busy process predicts off the loop
            executor=executor,
        )
        self._samples: deque[_Sample] = deque()
        self._queued_rows = 0
        self._last_warning = 0.0
        self._wake = asyncio.Event()
        self._idle = False
        self._task: asyncio.Task[None] | None = None

    @property
    def trial(self) -> TrialView | None:
        return self.host.trial

    def active(self) -> Active | None:
        return self.trial.current if self.trial is not None else None

    def start(self) -> None:
        self.candidate.start()
        self._task = asyncio.get_running_loop().create_task(self._shadow_forever(), name=f"shadow-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.candidate.stop()

    # -- the request path ---------------------------------------------------------------------------
    async def predict(self, columns: Columns, rows: int, client: str | None, *, canary: bool = True) -> Result:
        """`canary=False`: production answers whatever the rollout (a V2 request that names a version)."""
        active = self.active()
        if canary and active is not None and to_candidate(active, client):
            try:
                return await self.candidate.submit(columns, rows)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # answered by production below; counted against the candidate
                self._candidate_failed(active, e)
        try:
            return await self.production.submit(columns, rows)
        except asyncio.CancelledError:
            raise
        except Exception:
            if active is not None and self.trial is not None:
                self.trial.live.error("production")
            raise

    def _candidate_failed(self, active: Active, error: Exception) -> None:
        """Count it (only against the rollout it happened in) and say so, at most every 10 s: the exception's
        type only, since its text may quote a client's input."""
        trial = self.trial
        if trial is None or trial.current is not active:  # the candidate was dropped meanwhile: not its failure
            return
        trial.live.error("candidate")
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("%s: candidate v%s failed requests (%s); production answers them", self.name,
                        active.candidate.version, type(error).__name__)  # fmt: skip

    def _candidate(self) -> ServedModel | None:
        active = self.active()
        return active.candidate if active is not None else None

    def _on_candidate_batch(
        self, served: ServedModel, columns: Columns, predictions: list[Any], seconds: float, requests: int
    ) -> None:
        if self.trial is not None:
            self.trial.live.observe("candidate", seconds, predictions, requests)
        self.host.metrics.predictions.labels(model=self.name, version=str(served.version)).inc(len(predictions))

    def after_production(self, columns: Columns, predictions: list[Any], seconds: float, requests: int) -> None:
        """Production answered a predict call: count it, and queue a shadow sample when one is due."""
        active = self.active()
        if active is None or self.trial is None:
            return
        self.trial.live.observe("production", seconds, predictions, requests)
        rollout = active.rollout
        if rollout.mode != "shadow" or random.random() >= rollout.share:
            return
        rows = len(predictions)
        if self._queued_rows + rows > self.queue_rows:
            self.host.metrics.shadow_dropped.labels(model=self.name).inc(requests)
            return
        self._queued_rows += rows
        self._samples.append(_Sample(active, columns, predictions, requests))
        if self._idle:  # waking a busy worker would cost a task step per request for nothing
            self._wake.set()

    # -- shadow runs, off the request path -----------------------------------------------------------
    async def _shadow_forever(self) -> None:
        while True:
            self._idle = True
            await self._wake.wait()
            self._idle = False
            self._wake.clear()
            while self._samples:
                # a burst of up to ~2 ms, then the loop serves requests again (a run on the predict thread yields
                # by itself). The burst's first sample runs alone and is timed, on exactly the rows production
                # ran, so both versions' latencies measure the same work; the samples queued behind it run merged
                # into few predict calls, compared and counted but not timed: a backlog is cleared at a fraction
                # of the cost of one call per sample.
                until = time.perf_counter() + SHADOW_BURST_SECONDS
                timed = True
                while self._samples and time.perf_counter() < until:
                    group = self._take(1 if timed else self._group_rows())
                    try:
                        await self._shadow(group, timed=timed)
                    except Exception:  # a bug here must not end the worker and leave the queue full
                        log.exception("%s: shadow run failed", self.name)
                    timed = False
                await asyncio.sleep(0)

    def _group_rows(self) -> int:
        active = self.active()
        fast = active is not None and active.candidate.fast is not None
        return FAST_INLINE_MAX_ROWS if fast else self.production.max_size

    def _take(self, max_rows: int) -> list[_Sample]:
        """The oldest sample, and those after it of the same rollout while they fit in `max_rows` rows."""
        group = [self._samples.popleft()]
        rows = len(group[0].predictions)
        while self._samples and self._samples[0].active is group[0].active:
            more = len(self._samples[0].predictions)
            if rows + more > max_rows:
                break
            group.append(self._samples.popleft())
            rows += more
        self._queued_rows -= rows
        return group

    async def _shadow(self, group: list[_Sample], *, timed: bool) -> None:
        active = group[0].active
        trial = self.trial
        if trial is None or trial.current is not active:  # the rollout ended or changed meanwhile
            return
        candidate = active.candidate
        columns = joined([sample.columns for sample in group])
        production = [p for sample in group for p in sample.predictions]
        requests = sum(sample.requests for sample in group)
        began = time.perf_counter()
        try:
            if candidate.fast is not None and len(production) <= FAST_INLINE_MAX_ROWS:
                predictions, _ = predict(candidate, columns)
            else:
                loop = asyncio.get_running_loop()
                predictions, _ = await loop.run_in_executor(self.executor, predict, candidate, columns)
        except Exception as e:  # the candidate's failure is a statistic, never a client's problem
            if trial.current is active:
                trial.live.error("candidate", requests)
            log.debug("%s: shadow candidate v%s failed: %s", self.name, candidate.version, type(e).__name__)
            return
        if trial.current is not active:  # ended while it ran
            return
        trial.live.observe("candidate", time.perf_counter() - began if timed else None, predictions, requests)
        trial.live.compare(production, predictions)
