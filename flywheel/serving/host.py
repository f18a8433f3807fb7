"""The model host: poll one model's production alias, load + verify a new version, then swap it in atomically.

With a verifier configured, the manifest's signature is checked first, before anything else is read
(flywheel/registry/signing.py). A version that fails any check is never served; the old one keeps serving and the
failure is counted and retried with backoff. S3 being unreachable never makes a loaded host unready. A replica runs one
host per model (flywheel/serving/fleet.py); they share the process's memory budget.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.errors import FlywheelError, ModelVerificationError
from flywheel.registry.manifest import check_golden, check_libraries
from flywheel.registry.model_loading import open_version
from flywheel.registry.signing import Verifier
from flywheel.registry.store import Registry
from flywheel.schema import Schema
from flywheel.serving.memory import MemoryBudget
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.quality_watch import QualityWatch
from flywheel.serving.served import Listener, ServedModel, State
from flywheel.serving.trial import Trial

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 60.0


class ModelHost:
    def __init__(
        self,
        registry: Registry,
        metrics: ServingMetrics,
        *,
        budget: MemoryBudget | None = None,
        poll_interval: float = 5.0,
        pinned_version: int | None = None,
        verifier: Verifier | None = None,
        pod: str | None = None,
        publish_seconds: float = 15.0,
        quality: QualityWatch | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.registry, self.metrics, self.verifier = registry, metrics, verifier
        self.listener = listener  # an agent: told of every swap and rollout change, for its request workers
        self.name = registry.name
        self.budget = budget if budget is not None else MemoryBudget()
        self.poll_interval, self.pinned = poll_interval, pinned_version
        self.current: ServedModel | None = None
        self._etag: str | None = None
        self._polled = False  # the alias has been read at least once
        self._wanted: int | None = None  # the version production points at (or the pinned one)
        self._wanted_since: float | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.add_model(self.name)
        # rollouts (flywheel/serving/trial.py): a pinned replica serves its one version and takes no part
        self.trial = Trial(self, pod, publish_seconds) if pod is not None and pinned_version is None else None
        self.quality = quality  # the published live quality as gauges, read at the same cadence

    @property
    def ready(self) -> bool:
        return self.current is not None

    @property
    def wanted(self) -> int | None:
        """The version production points at (None: none yet, or the alias was never read)."""
        return self._wanted

    @property
    def state(self) -> State:
        if self.current is not None:
            return "ready"
        if not self._polled:
            return "unknown"
        if self._wanted is None:
            return "unavailable"
        return "failed" if self._failures else "loading"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"model-host-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop polling; `wait=False` only asks (a fleet asks every host first, then waits for each)."""
        self._stop.set()
        if wait and self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            jitter = random.uniform(0.8, 1.2)
            self._stop.wait(self.poll_interval * jitter if self.ready else min(1.0, self.poll_interval))

    # -- one poll ----------------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Check the alias (conditional GET) and load the version it names when it changed."""
        try:
            self._observe()
        except (ClientError, BotoCoreError, FlywheelError, ValueError, KeyError) as e:
            log.warning(
                "alias poll failed for %s; keeping v%s: %s", self.name, self.current and self.current.version, e
            )
        self._update_staleness()
        if self.trial is not None:  # first: a promotion seen with its alias move reuses the loaded candidate
            try:
                self.trial.poll()
            except (ClientError, BotoCoreError, FlywheelError, ValueError, KeyError, TypeError) as e:
                log.warning("rollout poll failed for %s; routing unchanged: %s", self.name, e)
        self._poll_production()
        if self.quality is not None:  # never raises: a bad read keeps the last figures
            self.quality.poll()

    def _poll_production(self) -> None:
        wanted = self._wanted
        if wanted is None or (self.current and self.current.version == wanted):
            return
        kept = self.trial.take_kept(wanted) if self.trial is not None else None
        if kept is not None:  # the promoted candidate, already verified and serving its share
            self._swap(kept)
            self.metrics.reloads.labels(model=self.name, result="success").inc()
            return
        if time.monotonic() < self._next_attempt:
            return
        self._load(wanted)

    def _observe(self) -> None:
        if self.pinned is not None:
            if self._wanted != self.pinned:
                self._wanted, self._wanted_since = self.pinned, time.monotonic()
            self._polled = True
            return
        alias = self.registry.alias_if_changed(self._etag)
        self._polled = True
        if alias is None:
            return
        self._etag = alias.etag
        if alias.version != self._wanted:
            self._wanted, self._wanted_since = alias.version, time.monotonic()
            self._failures, self._next_attempt = 0, 0.0

    def _update_staleness(self) -> None:
        current = self.current.version if self.current else None
        behind = self._wanted is not None and current != self._wanted and self._wanted_since is not None
        stale = time.monotonic() - self._wanted_since if behind and self._wanted_since else 0.0
        self.metrics.staleness.labels(model=self.name).set(stale)

    def _load(self, version: int) -> None:
        started = time.monotonic()
        try:
            served = self.verify(version)
        except (ModelVerificationError, FlywheelError, ClientError, BotoCoreError, MemoryError) as e:
            self._failures += 1
            delay = min(MAX_BACKOFF_SECONDS, self.poll_interval * 2 ** min(self._failures, 6))
            self._next_attempt = time.monotonic() + delay
            self.metrics.reloads.labels(model=self.name, result="failure").inc()
            log.error(
                "refusing v%s of %s (attempt %d, next in %.0fs); still serving v%s: %s",
                version,
                self.name,
                self._failures,
                delay,
                self.current and self.current.version,
                getattr(e, "message", e),
            )
            return
        self._swap(served)
        self.metrics.reload_duration.labels(model=self.name).observe(time.monotonic() - started)
        self.metrics.reloads.labels(model=self.name, result="success").inc()
        self._failures = 0

    def verify(self, version: int, *, slot: str | None = None, source: str | None = None) -> ServedModel:
        """Download, check the signature, libraries, memory room, sha256 and golden outputs; nothing is served
        before this passes, and model.joblib is not even downloaded before the signature checks out. `slot`: the
        memory budget's name for it (a rollout's candidate has its own, beside production's)."""
        opened = open_version(self.registry, version, self.verifier)
        manifest = opened.manifest
        check_libraries(manifest["libraries"])
        size = int(manifest.get("size_bytes", 0))
        with self.budget.reserve(slot or self.name, version, size):
            model = opened.load_model()
            schema = Schema.model_validate(manifest["schema"])
            check_golden(schema, model, manifest["golden"])
            fast, note = self._fast_path(version, model, schema, manifest["golden"]["inputs"])
        classes = [str(c) for c in getattr(model, "classes_", [])]
        return ServedModel(
            name=self.name,
            version=version,
            model=model,
            schema=schema,
            manifest=manifest,
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source=source or ("pinned" if self.pinned is not None else "alias"),
            classes=classes,
            fast=fast,
            serving_path="fast" if fast is not None else "pipeline",
            fast_path_note=note,
        )

    def _fast_path(self, version: int, model: Any, schema: Schema, golden: list[dict[str, Any]]) -> tuple[Any, str]:
        """Build, compile and verify the fast predictor before the swap; None (the Pipeline serves) when this
        shape has none, or when it differs from the Pipeline or fails in any way: it is only an optimisation."""
        from flywheel.serving.fastpath.builder import compile_or_reason, verify

        fast, reason = compile_or_reason(model, schema)
        if fast is None:
            log.info("%s v%s: served through the Pipeline (no fast path: %s)", self.name, version, reason)
            return None, f"no fast path: {reason}"
        try:
            fast.warm()  # compile (or load from numba's cache) now, not on the first request
            verdict = verify(fast, model, schema, golden)
        except Exception as e:  # numba missing or failing: the Pipeline still serves, loudly
            log.exception("%s v%s: fast path failed; serving through the Pipeline", self.name, version)
            self.metrics.fast_path_fallbacks.labels(model=self.name).inc()
            return None, f"fast path failed: {type(e).__name__}: {e}"
        if not verdict.exact:
            log.error("%s v%s: fast path differs from the Pipeline, serving through the Pipeline: %s",
                      self.name, version, verdict.first_difference)  # fmt: skip
            self.metrics.fast_path_fallbacks.labels(model=self.name).inc()
            return None, f"fast path differs: {verdict.first_difference}"
        return fast, f"{fast.kind} fast path, identical on {verdict.rows_checked} rows"

    def _swap(self, served: ServedModel) -> None:
        old = self.current
        self.current = served  # one reference assignment: requests see the old or the new model, never half
        self.budget.hold(self.name, served.version, int(served.manifest.get("size_bytes", 0)))
        m = self.metrics
        if old is not None:
            m.model_info.remove(old.name, str(old.version))
        m.model_info.labels(model=served.name, version=str(served.version)).set(1)
        m.model_version.labels(model=served.name).set(served.version)
        m.ready.labels(model=served.name).set(1)
        m.fast_path.labels(model=served.name).set(1 if served.fast is not None else 0)
        self._update_staleness()
        if self.listener is not None:
            self.listener.swapped(self.name, served)
        log.info("now serving %s v%s (was v%s)", served.name, served.version, old and old.version)
