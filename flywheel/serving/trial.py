"""A model's rollout as one replica process sees it: the candidate loaded beside production, and its stats.

Polled by the model's host thread after the production alias (flywheel/serving/host.py): a conditional GET of
models/<model>/rollout.json. While a rollout runs, the candidate is loaded under the same verify-then-swap and
memory rules as production (signature, libraries, memory room, sha256, golden rows, fast path); until that
passes, this process sends it no traffic. Requests read `current` once: a rollout and its candidate are one
immutable snapshot. Every FLYWHEEL_ROLLOUT_PUBLISH_SECONDS the process writes its statistics for the judge.
When the rollout is promoted, the loaded candidate is kept to become production without a second download.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.clock import now_iso
from flywheel.errors import FlywheelError, ModelVerificationError
from flywheel.release.rollout_state import Rollout, load_if_changed
from flywheel.release.rollout_stats import publish, rollout_id
from flywheel.serving.live import LiveStats

if TYPE_CHECKING:
    from flywheel.serving.host import ModelHost
    from flywheel.serving.served import ServedModel

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Active:
    """A running rollout whose candidate this process serves."""

    rollout: Rollout
    candidate: ServedModel
    key: str  # the rollout id (flywheel/release/rollout_stats.py)
    joined_at: str = ""  # when this process started counting: the judge bounds its counts by the time since


class Trial:
    def __init__(self, host: ModelHost, pod: str, publish_seconds: float) -> None:
        self.host, self.pod, self.publish_seconds = host, pod, publish_seconds
        self.metrics = host.metrics
        self.live = LiveStats(host.metrics, host.name)
        self.current: Active | None = None
        self.kept: ServedModel | None = None  # a promoted candidate, until production swaps to it
        self.rollout: Rollout | None = None  # as last read (running or finished)
        self._etag: str | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._published = 0.0

    @property
    def slot(self) -> str:
        return f"{self.host.name}:candidate"

    def poll(self) -> None:
        """Read the rollout state; load, keep serving or drop the candidate; publish the statistics when due."""
        self._read()
        rollout = self.rollout
        current = self.current
        if rollout is None or not rollout.running:
            if current is not None:
                self._end(current, rollout)
            return
        if current is not None and current.key == rollout_id(rollout):
            self.publish()
            return
        if current is not None:  # a new rollout replaced the one this process served
            self._end(current, None)
        if time.monotonic() >= self._next_attempt:
            self._begin(rollout)

    def _read(self) -> None:
        changed, found = load_if_changed(self.host.registry, self._etag)
        if not changed:
            return
        self.rollout, self._etag = found if found is not None else (None, None)
        if self.rollout is None:
            return
        r = self.rollout
        if not r.running and r.decided_at:
            stamp = datetime.fromisoformat(r.decided_at).timestamp()
            self.metrics.rollout_decided.labels(model=r.model, decision=r.status).set(stamp)

    def _begin(self, rollout: Rollout) -> None:
        kept = self.kept
        if kept is not None and kept.version != rollout.candidate:  # a promoted candidate production never took
            self._drop_kept()
            kept = None
        try:
            if kept is not None and kept.version == rollout.candidate:
                candidate, self.kept = kept, None
            else:
                candidate = self.host.verify(rollout.candidate, slot=self.slot, source="rollout")
        except (ModelVerificationError, FlywheelError, ClientError, BotoCoreError, MemoryError) as e:
            self._failures += 1
            delay = min(MAX_BACKOFF_SECONDS, self.host.poll_interval * 2 ** min(self._failures, 6))
            self._next_attempt = time.monotonic() + delay
            self.metrics.reloads.labels(model=self.host.name, result="failure").inc()
            log.error("%s: refusing rollout candidate v%s (attempt %d, next in %.0fs); production serves alone: %s",
                      self.host.name, rollout.candidate, self._failures, delay, getattr(e, "message", e))  # fmt: skip
            return
        self._failures, self._next_attempt = 0, 0.0
        self.host.budget.hold(self.slot, candidate.version, int(candidate.manifest.get("size_bytes", 0)))
        profile = candidate.manifest.get("prediction_stats") or {"kind": "categorical", "categories": []}
        self.live.reset(profile, classification=bool(candidate.classes))
        self.current = Active(rollout, candidate, rollout_id(rollout), now_iso())
        self._published = time.monotonic()
        if self.host.listener is not None:
            self.host.listener.rollout(self.host.name, self.current)
        m = self.metrics
        m.rollout_info.labels(model=rollout.model, mode=rollout.mode, candidate=str(rollout.candidate),
                              baseline=str(rollout.baseline)).set(1)  # fmt: skip
        m.rollout_share.labels(model=rollout.model).set(rollout.share)
        log.info("%s: %s rollout of v%s at %g against v%s", rollout.model, rollout.mode, rollout.candidate,
                 rollout.share, rollout.baseline)  # fmt: skip

    def _end(self, active: Active, finished: Rollout | None) -> None:
        """Stop routing to the candidate; keep it when it was promoted (it becomes production next)."""
        try:
            self.publish(force=True)  # the last counts reach the judge's record
        finally:
            self.current = None
            if self.host.listener is not None:
                self.host.listener.rollout(self.host.name, None)
        r = active.rollout
        self.metrics.rollout_info.remove(r.model, r.mode, str(r.candidate), str(r.baseline))
        self.metrics.rollout_share.labels(model=r.model).set(0)
        promoted = finished is not None and finished.status == "promoted" and finished.candidate == r.candidate
        serving = self.host.current is not None and self.host.current.version == r.candidate
        self.kept = active.candidate if promoted and not serving else None
        if self.kept is None:
            self.host.budget.release(self.slot)
        log.info("%s: rollout of v%s ended (%s)", r.model, r.candidate, finished.status if finished else "replaced")

    def _drop_kept(self) -> None:
        self.kept = None
        self.host.budget.release(self.slot)

    def take_kept(self, version: int) -> ServedModel | None:
        """The promoted candidate when production now wants it (no second download); else None, and a kept
        candidate that production went past is let go."""
        kept = self.kept
        if kept is not None:
            self._drop_kept()
        return kept if kept is not None and kept.version == version else None

    def publish(self, *, force: bool = False) -> None:
        active = self.current
        if active is None or (not force and time.monotonic() - self._published < self.publish_seconds):
            return
        if self.host.listener is not None:  # an agent answers no request: its workers publish their own counts
            return
        self._published = time.monotonic()
        production, candidate = self.live.snapshot()
        try:
            publish(
                self.host.registry, active.rollout, self.pod, production, candidate, started_at=active.joined_at or None
            )
        except (ClientError, BotoCoreError, ValueError) as e:  # the next interval retries with the cumulative counts
            log.warning("%s: publishing rollout statistics failed: %s", self.host.name, e)
