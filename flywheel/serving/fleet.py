"""The models one replica serves: one host, batcher and drift monitor per model, found by listing the
registrations (`models/<name>/schema.json`) at start-up and every FLYWHEEL_DISCOVER_INTERVAL_SECONDS after.

Each model hot-reloads on its own from its own alias; a model registered while the replica runs is served
without a restart. A registration that disappears is not unloaded (registrations are create-only; a listing
that misses one must not take a model away): the model keeps serving until the replica restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.errors import FlywheelError, NotFound, NotReady
from flywheel.registry import registrations, signing
from flywheel.registry.signing import Verifier
from flywheel.registry.store import Registry
from flywheel.schema import Schema
from flywheel.serving.batcher import Activity, Batcher, Result
from flywheel.serving.host import ModelHost
from flywheel.serving.inputs import Columns
from flywheel.serving.memory import MemoryBudget
from flywheel.serving.metrics import QuickHistogram, ServingMetrics, series_value
from flywheel.serving.monitor import DriftMonitor
from flywheel.serving.quality_watch import QualityWatch
from flywheel.serving.relayed import RelayedHost
from flywheel.serving.routing import Router
from flywheel.serving.served import HostView, Listener, ServedModel, State
from flywheel.settings import ServeSettings

log = logging.getLogger(__name__)
LISTING_ERRORS = (ClientError, BotoCoreError, FlywheelError, ValueError, OSError)

# Open Inference Protocol / MLServer repository-index states
V2_STATE = {"ready": "READY", "loading": "LOADING", "unknown": "UNKNOWN", "unavailable": "UNAVAILABLE",
            "failed": "UNAVAILABLE"}  # fmt: skip


def registered(s3: Any, settings: ServeSettings) -> dict[str, Schema]:
    """The registrations this replica serves (FLYWHEEL_SERVE_MODELS, or every one)."""
    found = registrations.models(s3, settings)
    wanted = settings.served_names
    return {n: s for n, s in found.items() if not wanted or n in wanted}


def make_host(settings: ServeSettings, s3: Any, name: str, metrics: ServingMetrics, budget: MemoryBudget,
              verifier: Verifier | None, pod: str, listener: Listener | None = None) -> ModelHost:  # fmt: skip
    """A model's host as the settings say (its alias, poll interval, pinned version, rollout statistics)."""
    s = settings
    return ModelHost(
        Registry(s3, s.bucket, name, s.models_prefix),
        metrics,
        budget=budget,
        poll_interval=s.poll_interval_seconds,
        pinned_version=s.pinned_version if name == s.model_name else None,
        verifier=verifier,
        pod=pod,
        publish_seconds=s.rollout_publish_seconds,
        quality=QualityWatch(s3, s.bucket, name, metrics, s.models_prefix),
        listener=listener,
    )


def pod_name() -> str:
    """This process's name in a rollout's statistics: unique per process start, so a restart adds, never resets."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Hosted:
    """One served model: its host (hot reload), its batcher (micro-batching) and its drift monitor."""

    def __init__(self, name: str, host: HostView, monitor: DriftMonitor | None, *, gating: bool) -> None:
        self.name, self.host, self.monitor = name, host, monitor
        self.gating = gating  # known at start-up: the replica is not ready until it is loaded (if it has a version)
        self.batcher: Batcher  # set by the fleet
        self.router: Router  # set by the fleet
        self._counted: int | None = None  # the version (not the model: a retired one must not stay in memory)
        self._batch_sizes: Any = None
        self._predictions: Any = None

    def on_batch(
        self, served: ServedModel, columns: Columns, predictions: list[Any], seconds: float, requests: int
    ) -> None:
        if self._counted != served.version:  # the series of this version, looked up once per version
            m = self.host.metrics
            self._counted = served.version
            self._batch_sizes = QuickHistogram(m.batch_size.labels(model=self.name))
            self._predictions = series_value(m.predictions.labels(model=self.name, version=str(served.version)))
        self._batch_sizes.observe(len(predictions))
        self._predictions.inc(len(predictions))
        if self.monitor is not None:  # a request worker's agent keeps the drift windows, from the relayed answers
            self.monitor.record(served, columns, predictions)
        self.router.after_production(columns, predictions, seconds, requests)

    async def predict(self, columns: Columns, rows: int, client: str | None, *, canary: bool = True) -> Result:
        """Production's answer, or the candidate's for a canary request (flywheel/serving/routing.py)."""
        return await self.router.predict(columns, rows, client, canary=canary)

    def role_of(self, version: int) -> str:
        """Which side of a rollout answered with `version`: the canary candidate, or production."""
        active, current = self.router.active(), self.host.current
        serving = current is not None and current.version == version
        canary = active is not None and version == active.candidate.version and not serving
        return "candidate" if canary else "production"

    def served(self) -> ServedModel:
        served = self.host.current
        if served is None:
            raise NotReady(f"no model loaded yet for {self.name!r}", model=self.name, state=self.host.state)
        return served

    def describe(self) -> dict[str, Any]:
        """Name, served version, state and the version production points at."""
        current = self.host.current
        active = self.router.active()
        rollout = None
        if active is not None:
            r = active.rollout
            rollout = {"mode": r.mode, "candidate": r.candidate, "baseline": r.baseline, "share": r.share,
                       "candidate_serving_path": active.candidate.serving_path}  # fmt: skip
        return {
            "name": self.name,
            "version": current.version if current else None,
            "ready": current is not None,
            "state": self.host.state,
            "production_version": self.host.wanted,
            "rollout": rollout,
        }

    def reason(self) -> str:
        state: State = self.host.state
        return {
            "unknown": "the production alias has not been read yet",
            "unavailable": "no production version yet",
            "loading": f"loading v{self.host.wanted}",
            "failed": f"v{self.host.wanted} was refused; retrying",
        }.get(state, "")


class Fleet:
    """Every model this replica serves. Mutated only on the event loop (the discovery task)."""

    def __init__(self, settings: ServeSettings, s3: Any, metrics: ServingMetrics, *, relayed: bool = False) -> None:
        self.settings, self.s3, self.metrics = settings, s3, metrics
        self.relayed = relayed  # a request worker: its agent lists, polls and verifies (flywheel/serving/agent.py)
        # models the agent loaded that a worker of the replica does not serve yet (the agent says); only those known
        # at start-up (gating) hold readiness, as a model's own loading does
        self.unsynced: set[str] = set()
        self.default = settings.model_name
        self.models: dict[str, Hosted] = {}
        self.discovered = False  # the registrations were listed at least once
        self.budget = MemoryBudget()  # room for a new version given every model held
        # one verifier for every model (a KMS public key is fetched once, at the first load)
        self.verifier = (  # a request worker verifies nothing: its agent did (and it has no AWS credentials)
            None if relayed else signing.verifier(settings.verify_kms_key_id, settings.verify_public_key_file)
        )
        self.activity = Activity()
        self.pod = pod_name()
        # one predict thread for every model (docs/serving.md, "Micro-batching and threads")
        self._predict = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discover")
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.relayed:
            self._task = asyncio.get_running_loop().create_task(self._discover_forever(), name="discover")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for m in self.models.values():
            m.host.stop(wait=False)
        for m in self.models.values():
            await m.router.stop()
            await m.batcher.stop()
            m.host.stop()
        self._io.shutdown(wait=False, cancel_futures=True)
        self._predict.shutdown(wait=False, cancel_futures=True)

    async def _discover_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.discover_interval_seconds
        while True:
            try:
                found = await loop.run_in_executor(self._io, self._registered)
            except LISTING_ERRORS as e:  # retried at the next interval; never ends the task
                log.warning("listing model registrations failed; serving %s: %s", sorted(self.models), e)
            else:
                self.adopt(found)
            await asyncio.sleep(interval if self.discovered else min(1.0, interval))

    def _registered(self) -> dict[str, Schema]:
        return registered(self.s3, self.settings)

    def adopt(self, found: dict[str, Schema]) -> None:
        """Start serving every model in `found` not served yet (on the event loop)."""
        first = not self.discovered
        for name, schema in found.items():
            if name not in self.models:
                self.models[name] = self._start(name, gating=first)
                log.info("serving model %s (%s)%s", name, schema.name, "" if first else ", registered meanwhile")
        self.discovered = True

    def _start(self, name: str, *, gating: bool) -> Hosted:
        s = self.settings
        if self.relayed:
            return self._wire(Hosted(name, RelayedHost(name, self.metrics), None, gating=gating))
        host = make_host(s, self.s3, name, self.metrics, self.budget, self.verifier, self.pod)
        return self._wire(Hosted(name, host, DriftMonitor(self.metrics, name, s.drift_window), gating=gating))

    def _wire(self, hosted: Hosted) -> Hosted:
        s, host, name = self.settings, hosted.host, hosted.name
        hosted.batcher = Batcher(
            lambda: host.current,
            hosted.on_batch,
            max_size=s.batch_max_size,
            max_wait_ms=s.batch_max_wait_ms,
            name=name,
            activity=self.activity,
            executor=self._predict,
        )
        hosted.router = Router(host, hosted.batcher, self._predict, queue_rows=s.shadow_queue_rows)
        host.start()
        hosted.batcher.start()
        hosted.router.start()
        return hosted

    # -- lookups -----------------------------------------------------------------------------------
    def get(self, name: str) -> Hosted:
        """The served model `name`: 404 naming the served models when there is none, 503 before the listing."""
        hosted = self.models.get(name)
        if hosted is not None:
            return hosted
        if not self.discovered:
            raise NotReady("model registrations not read yet", model=name)
        served = sorted(self.models)
        raise NotFound(f"unknown model {name!r}; this server serves {served}", model=name, models=served)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when a model is loaded and every model known at start-up that has a production version is.

        A model with no version yet does not block; neither does one registered after start-up (every replica
        would turn unready at once while it loads); their state is in the body."""
        models = {n: m.describe() for n, m in self.models.items()}
        body: dict[str, Any] = {"models": models}
        if not self.discovered:
            return False, {**body, "reason": "model registrations not read yet"}
        waiting = sorted(
            n for n, m in self.models.items() if m.gating and m.host.state in ("unknown", "loading", "failed")
        )
        if waiting:
            return False, {**body, "reason": f"waiting for {waiting}"}
        if not any(m["ready"] for m in models.values()):
            return False, {**body, "reason": "no model loaded yet"}
        behind = sorted(n for n in self.unsynced if n in self.models and self.models[n].gating)
        if behind:
            return False, {**body, "reason": f"request workers still loading {behind}"}
        return True, body
