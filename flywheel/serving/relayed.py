"""A request worker's side of the agent link (flywheel/serving/agent.py, relay.py): the models as the agent
verified them, applied on the worker's event loop; answered requests and rollout counts sent back.

Nothing here waits on the agent: reports are written to the socket's transport, and when its buffer is over
`max_buffer_bytes` (the agent is slow or gone) a report is dropped and counted, never queued without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from typing import Any

from flywheel.access.api_keys import Authenticator
from flywheel.clock import now_iso
from flywheel.schema import Schema
from flywheel.serving import relay
from flywheel.serving.live import LiveStats
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.served import ServedModel, State
from flywheel.serving.trial import Active

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.005  # reports wait at most this long to share a write
#: answered requests of up to this many rows wait for the flush to be pickled together; a larger one is pickled on
#: its own at once (its frame counted against `max_buffer_bytes` like any report)
BATCHED_ROWS = 16
#: values (rows x features) of answered requests kept for one frame: beyond it they are pickled at once, so a frame
#: stays far below relay.MAX_FRAME and the bytes waiting for the flush are bounded
MAX_BATCHED_VALUES = 1 << 18


class RelayedTrial:
    """The rollout this worker serves (as the agent verified it) and this worker's own counts of it."""

    def __init__(self, metrics: ServingMetrics, model: str) -> None:
        self.live = LiveStats(metrics, model)
        self.current: Active | None = None


class RelayedHost:
    """A model as its agent's host serves it: what the agent sent, nothing polled or loaded here."""

    def __init__(self, name: str, metrics: ServingMetrics) -> None:
        self.name, self.metrics = name, metrics
        self.current: ServedModel | None = None
        self.trial: RelayedTrial | None = RelayedTrial(metrics, name)
        self.remote: tuple[State, int | None] = ("unknown", None)  # the agent's host state and wanted version

    @property
    def state(self) -> State:
        return "ready" if self.current is not None else self.remote[0]

    @property
    def wanted(self) -> int | None:
        return self.remote[1]

    def start(self) -> None:
        return None

    def stop(self, *, wait: bool = True) -> None:
        return None


class WorkerLink:
    """Applies what the agent sends to the fleet and the authenticator; `record` is the worker's capturer."""

    def __init__(self, sock: socket.socket, pod: str, publish_seconds: float, max_buffer_bytes: int = 64 << 20) -> None:
        self.sock, self.pod = sock, pod
        self.metrics: ServingMetrics  # set by the service, with the fleet and the authenticator
        self.publish_seconds, self.max_buffer_bytes = publish_seconds, max_buffer_bytes
        self.fleet: Any = None  # flywheel.serving.fleet.Fleet, set by the service
        self.auth: Authenticator | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []  # reports not written yet
        self._pending_bytes = 0
        self._answered: list[tuple[Any, ...]] = []  # answered requests not written yet: one frame at the flush
        self._answered_values = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()
        self.synced = asyncio.Event()  # what the agent served when this worker started has been applied

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_forever(), name="agent-link"),
                       loop.create_task(self._publish_forever(), name="rollout-counts")]  # fmt: skip

    async def stop(self, timeout: float = 5.0) -> None:
        """The last rollout counts and reports go out first, written before this returns (within `timeout`)."""
        self._publish_all()
        self._flush()
        writer = self._writer
        if writer is not None and not writer.is_closing():
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.drain(), timeout)
        for task in self._tasks:
            task.cancel()

    # -- from the agent ----------------------------------------------------------------------------
    async def _read_forever(self) -> None:
        try:
            reader, self._writer = await asyncio.open_unix_connection(sock=self.sock, limit=1 << 20)
            self._post(relay.HELLO, self.pod, essential=True)
            while True:
                kind, size = relay.HEADER.unpack(await reader.readexactly(relay.HEADER.size))
                body = await reader.readexactly(size)
                # a version's pickle is read beside the loop (a Pipeline's takes a while): the loop keeps answering
                big = size > 1 << 16
                payload = await asyncio.to_thread(relay.agent_loads, body) if big else relay.agent_loads(body)
                try:
                    await self.apply(kind, payload)
                except Exception:  # a bug here must be seen; the worker keeps what it serves
                    log.exception("could not apply the agent's message %d", kind)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            log.error("the agent closed its link (%s): this worker stops", type(e).__name__)
        finally:
            self.closed.set()

    async def apply(self, kind: int, payload: Any) -> None:
        fleet = self.fleet
        if kind == relay.KEYS:
            if payload is not None and self.auth is not None:
                self.auth.install(*payload)
        elif kind == relay.MODELS:
            schemas, _first = payload
            fleet.adopt(schemas)
        elif kind == relay.STATE:
            states, unsynced = payload
            fleet.unsynced = set(unsynced)
            for name, remote in states.items():
                if name in fleet.models:
                    fleet.models[name].host.remote = remote
        elif kind == relay.VERSION:
            name, served = payload
            await _warm(served)  # numba kernels loaded before the first request reaches this version
            fleet.models[name].host.current = served
            self._post(relay.LOADED, (name, served.version), essential=True)
        elif kind == relay.SYNCED:
            self._post(relay.SYNCED, None, essential=True)  # the agent counts this worker in its readiness from now
            self.synced.set()
        elif kind == relay.ROLLOUT:
            name, active = payload
            if active is not None:
                await _warm(active.candidate)
            self._rollout(fleet.models[name].host, active)

    def _rollout(self, host: RelayedHost, active: Active | None) -> None:
        trial = host.trial
        assert trial is not None
        old = trial.current
        if active is not None and old is not None and active.key == old.key:
            trial.current = dataclasses.replace(active, joined_at=old.joined_at)
            return
        if old is not None:
            self._publish(old, trial)  # the old rollout's last counts
        if active is not None:
            profile = active.candidate.manifest.get("prediction_stats") or {"kind": "categorical", "categories": []}
            trial.live.reset(profile, classification=bool(active.candidate.classes))
            active = dataclasses.replace(active, joined_at=now_iso())
        trial.current = active

    # -- to the agent ------------------------------------------------------------------------------
    def _post(self, kind: int, payload: Any, *, essential: bool = False) -> bool:
        """Queue a report; the queue goes out in one write a few milliseconds later (a system call per request
        was a sixth of a worker's time at c=64). False, nothing queued, when the agent is this far behind, unless
        `essential` (acknowledgements, rollout counts: a few bytes that readiness and the judge depend on)."""
        if not self._has_room(essential=essential):
            return False
        data = relay.frame(kind, payload)
        self._flush_soon()
        self._spill()  # reports reach the agent in the order they were made
        self._pending.append(data)
        self._pending_bytes += len(data)
        return True

    def _has_room(self, *, essential: bool = False) -> bool:
        """The link is open and (unless `essential`) less than `max_buffer_bytes` wait to be written."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        return essential or self._pending_bytes + writer.transport.get_write_buffer_size() <= self.max_buffer_bytes

    def _flush_soon(self) -> None:
        """The flush in FLUSH_SECONDS, unless one is already due (something is waiting for it)."""
        if not self._pending and not self._answered:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _spill(self) -> None:
        """The small answered requests kept so far, pickled now into the queue (the flush writes them)."""
        data = self._take_answered()
        if data is not None:
            self._pending.append(data)
            self._pending_bytes += len(data)

    def _flush(self) -> None:
        writer, pending = self._writer, self._pending
        self._pending, self._pending_bytes = [], 0
        answered = self._take_answered()
        if writer is None or writer.is_closing():
            return
        if answered is not None:  # the requests answered since the last report queued
            pending.append(answered)
        if pending:
            writer.write(b"".join(pending))

    def _take_answered(self) -> bytes | None:
        """The small answered requests kept so far, as one frame (one pickle: a third of the CPU of one each), or
        None; dropped and counted when the agent is this far behind."""
        answered, self._answered, self._answered_values = self._answered, [], 0
        if not answered:
            return None
        writer, data, reason = self._writer, b"", "full"  # no agent to write to, or this far behind
        if writer is not None and not writer.is_closing():
            try:
                data = relay.frame(relay.ANSWERED, answered)
            except Exception:  # never seen (plain checked values); the other reports still go
                log.exception("answered requests could not be sent to the agent")
                reason = "error"
        if writer is None or not data or len(data) + writer.transport.get_write_buffer_size() > self.max_buffer_bytes:
            for model, *_, ids, _columns, _predictions, _probabilities in answered:
                self.metrics.capture_dropped.labels(model=model, reason=reason).inc(len(ids))
            return None
        return data

    def record(self, model: str, schema: Schema, classes: list[str], ids: list[str], version: int, role: str,
               columns: dict[str, list[Any]], predictions: list[Any], probabilities: Any,
               key_id: str | None = None) -> None:  # fmt: skip
        """An answered request, for the agent's capture files and drift windows (same call as Capturer.record):
        a small one kept until the next flush, a few milliseconds away, a larger one pickled at once; dropped
        (counted) when the agent is this far behind."""
        answer = (model, version, role, time.time(), key_id, ids, columns, predictions, probabilities)
        if len(ids) > BATCHED_ROWS:
            kept = self._post(relay.ANSWERED, [answer])
        else:
            kept = self._has_room()
            if kept:
                self._flush_soon()
                self._answered.append(answer)
                self._answered_values += len(ids) * max(1, len(columns))
                if self._answered_values >= MAX_BATCHED_VALUES:  # a frame's worth
                    self._spill()
        if not kept:
            self.metrics.capture_dropped.labels(model=model, reason="full").inc(len(ids))

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self.publish_seconds)
            self._publish_all()

    def _publish_all(self) -> None:
        for hosted in list(self.fleet.models.values()) if self.fleet is not None else []:
            trial = hosted.host.trial
            if trial is not None and trial.current is not None:
                self._publish(trial.current, trial)

    def _publish(self, active: Active, trial: RelayedTrial) -> None:
        production, candidate = trial.live.snapshot()
        self._post(relay.LIVE, (active.key, active.joined_at, dataclasses.astuple(production),
                                dataclasses.astuple(candidate)), essential=True)  # fmt: skip


async def _warm(served: ServedModel) -> None:
    if served.fast is not None:
        try:
            await asyncio.to_thread(served.fast.warm)
        except Exception:  # the same image compiled it in the agent; a failure here shows on the first request
            log.exception("%s v%s: the fast path did not warm up in this worker", served.name, served.version)
