"""A replica's agent: everything that is not answering a request, in a process of its own (docs/serving.md,
"One process serves, one works").

The agent lists the registrations, runs every model's host (alias and rollout polls, download, signature, sha256,
golden rows, fast-path build and its bitwise check), refreshes the API keys, writes the captures, computes drift
and publishes each worker's rollout statistics. Its request workers (app/worker.py) receive only what passed:
each verified version as one pickle, sent the moment the agent's host swaps (flywheel/serving/relay.py), with the
Pipeline left out when a verified fast predictor serves it. A worker reports each answered request and its
rollout counts back; nothing a worker does waits on the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flywheel.access import api_keys
from flywheel.registry import signing
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import Rollout
from flywheel.release.rollout_stats import publish
from flywheel.schema import Schema
from flywheel.serving import relay
from flywheel.serving.capture import Capturer
from flywheel.serving.fleet import LISTING_ERRORS, make_host, pod_name, registered
from flywheel.serving.host import ModelHost
from flywheel.serving.memory import MemoryBudget
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.monitor import DriftMonitor
from flywheel.serving.served import ServedModel
from flywheel.serving.trial import Active
from flywheel.settings import ServeSettings

log = logging.getLogger(__name__)
STATE_EVERY_SECONDS = 0.2
RECENT_ROLLOUTS = 16
RECENT_VERSIONS = 16  # versions whose schema the agent keeps for answers relayed after a swap


def export(served: ServedModel) -> ServedModel:
    """What a worker needs of a verified version: without the Pipeline when the verified fast predictor serves."""
    return dataclasses.replace(served, model=None) if served.fast is not None else served


def exported(active: Active) -> Active:
    return dataclasses.replace(active, candidate=export(active.candidate))


@dataclasses.dataclass
class Worker:
    link: relay.BlockingLink
    pod: str = ""  # its name in rollout statistics, from its hello
    loaded: dict[str, int] = dataclasses.field(default_factory=dict)  # model -> the production version it serves
    answering: bool = False  # it applied its start-up snapshot (and answers requests from then on)
    reader: threading.Thread | None = None
    # frames for it, in order, written by its own thread: a slow worker never holds up the agent or the others
    outbox: queue.SimpleQueue[bytes | None] = dataclasses.field(default_factory=queue.SimpleQueue)


class Agent:
    def __init__(self, settings: ServeSettings, s3: Any, metrics: ServingMetrics, *, copies: int = 2) -> None:
        self.settings, self.s3, self.metrics = settings, s3, metrics
        self.budget = MemoryBudget(copies=copies)  # the agent and each worker hold every version
        self.verifier = signing.verifier(settings.verify_kms_key_id, settings.verify_public_key_file)
        self.pod = pod_name()
        self.hosts: dict[str, ModelHost] = {}
        self.schemas: dict[str, Schema] = {}
        self.monitors: dict[str, DriftMonitor] = {}
        # the schema and classes of the versions answers came from lately: a worker's answer relayed just after its
        # version was swapped out (a promotion, a rollback) is still captured (RECENT_VERSIONS of them kept)
        self._recent: dict[tuple[str, int], tuple[Schema, list[str]]] = {}
        self.discovered = False
        self.capture = Capturer.from_settings(s3, settings, self.pod, metrics)
        self.auth = (
            api_keys.authenticator(settings.api_keys_file, settings.api_keys_secret_id,
                                   settings.api_service_key_secret_ids, settings.api_keys_refresh_seconds)
            if settings.api_auth == "api-keys" else None
        )  # fmt: skip
        self.workers: dict[int, Worker] = {}
        self.on_lost: Callable[[int], None] = lambda pid: None  # the supervisor restarts a worker it lost
        self._rollouts: OrderedDict[str, Rollout] = OrderedDict()  # recent rollouts by id: late reports count
        self._lock = threading.RLock()  # workers, and the order of what they are sent
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.capture.start()
        for target, name in ((self._discover_forever, "discover"), (self._states_forever, "states"),
                             (self._keys_forever, "keys")):  # fmt: skip
            t = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            t.start()

    def stop(self, reports_timeout: float = 10.0) -> None:
        """Stop every poll, read what the (stopped) workers last reported, and write the last captures."""
        self._stop.set()
        with self._lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            host.stop(wait=False)
        for host in hosts:
            host.stop()
        deadline = time.monotonic() + reports_timeout
        for reader in self._readers:  # each ends at its worker's end of file, its reports taken
            reader.join(max(0.0, deadline - time.monotonic()))
        self.capture.stop()

    # -- models ------------------------------------------------------------------------------------
    def _discover_forever(self) -> None:
        interval = self.settings.discover_interval_seconds
        while not self._stop.is_set():
            try:
                found = registered(self.s3, self.settings)
            except LISTING_ERRORS as e:
                log.warning("listing model registrations failed; serving %s: %s", sorted(self.hosts), e)
            else:
                self.adopt(found)
            self._stop.wait(interval if self.discovered else min(1.0, interval))

    def adopt(self, found: dict[str, Schema]) -> None:
        first = not self.discovered
        with self._lock:
            for name, schema in found.items():
                if name not in self.hosts:
                    self.schemas[name] = schema
                    self.hosts[name] = self._start(name)
                    log.info("serving model %s (%s)%s", name, schema.name, "" if first else ", registered meanwhile")
            self.discovered = True
            self._broadcast(relay.MODELS, (dict(self.schemas), first))

    def _start(self, name: str) -> ModelHost:
        host = make_host(self.settings, self.s3, name, self.metrics, self.budget, self.verifier, self.pod, self)
        self.monitors[name] = DriftMonitor(self.metrics, name, self.settings.drift_window)
        host.start()
        return host

    # -- what the hosts tell (on their threads) ----------------------------------------------------
    def swapped(self, name: str, served: ServedModel) -> None:
        self._broadcast(relay.VERSION, (name, export(served)))

    def rollout(self, name: str, active: Active | None) -> None:
        if active is not None:
            with self._lock:
                self._rollouts[active.key] = active.rollout
                while len(self._rollouts) > RECENT_ROLLOUTS:
                    self._rollouts.popitem(last=False)
        self._broadcast(relay.ROLLOUT, (name, exported(active) if active is not None else None))

    def states(self) -> tuple[dict[str, tuple[str, int | None]], list[str]]:
        """Each model's state and wanted version, and the loaded models some answering worker does not serve yet: a
        replica is not ready while a worker is behind on a model known at start-up (it would answer 503)."""
        hosts = list(self.hosts.items())
        with self._lock:
            workers = [w for w in self.workers.values() if w.answering]  # one still starting answers nothing yet
        # a first load only: at a swap each worker keeps answering with the version it has until it swaps
        unsynced = sorted({n for w in workers for n, h in hosts if h.current is not None and n not in w.loaded})
        return {n: (h.state, h.wanted) for n, h in hosts}, unsynced

    def _states_forever(self) -> None:
        """Each model's state (loading, failed, ...) for the workers' readiness, when it changes."""
        last: tuple[dict[str, tuple[str, int | None]], list[str]] = ({}, [])
        while not self._stop.wait(STATE_EVERY_SECONDS):
            now = self.states()
            if now != last:
                self._broadcast(relay.STATE, now)
                last = now

    def _keys_forever(self) -> None:
        while self.auth is not None and not self._stop.wait(self.settings.api_keys_refresh_seconds):
            self.auth.refresh()
            self._broadcast(relay.KEYS, self._keys())

    def _keys(self) -> tuple[dict[str, Any], float] | None:
        if self.auth is None:
            return None
        return self.auth.records(), time.monotonic() - self.auth.loaded_at

    # -- workers -----------------------------------------------------------------------------------
    def attach(self, wid: int, link: relay.BlockingLink) -> None:
        """A new worker gets everything served now, then SYNCED (it starts answering after it), then every
        change in order; its reports are read on a thread of their own."""
        worker = Worker(link)
        with self._lock:  # no broadcast between the snapshot and the worker joining them
            put = worker.outbox.put
            put(relay.frame(relay.KEYS, self._keys()))
            if self.discovered:  # else the first listing's models come later, and gate its readiness
                put(relay.frame(relay.MODELS, (dict(self.schemas), False)))
            for name, host in self.hosts.items():
                if host.current is not None:
                    put(relay.frame(relay.VERSION, (name, export(host.current))))
                active = host.trial.current if host.trial is not None else None
                if active is not None:
                    put(relay.frame(relay.ROLLOUT, (name, exported(active))))
            put(relay.frame(relay.STATE, self.states()))
            put(relay.frame(relay.SYNCED, None))
            self.workers[wid] = worker
        threading.Thread(target=self._send, args=(wid, worker), name=f"agent-send-{wid}", daemon=True).start()
        worker.reader = threading.Thread(target=self._read, args=(wid, worker), name=f"agent-read-{wid}", daemon=True)
        worker.reader.start()
        self._readers.append(worker.reader)

    def _broadcast(self, kind: int, payload: Any) -> None:
        data = relay.frame(kind, payload)  # pickled once for every worker
        with self._lock:
            for worker in self.workers.values():
                worker.outbox.put(data)

    def _send(self, wid: int, worker: Worker) -> None:
        try:
            while (data := worker.outbox.get()) is not None:
                worker.link.sendall(data)
        except OSError as e:
            self._lost(wid, worker, e)

    def _lost(self, wid: int, worker: Worker, error: Exception | None) -> None:
        with self._lock:
            ours = self.workers.get(wid) is worker
            if ours:
                del self.workers[wid]
        worker.outbox.put(None)  # its sender thread ends
        worker.link.close()
        if ours:
            if error is not None:
                log.warning("lost worker %d: %s", wid, error)
            self.on_lost(wid)

    def _read(self, wid: int, worker: Worker) -> None:
        error: Exception | None = None
        try:
            while (got := worker.link.receive()) is not None:
                kind, body = got
                try:
                    self._report(worker, kind, relay.safe_loads(body))
                except Exception:  # one bad report is logged; the worker keeps being served
                    log.exception("worker %d: report %d not taken", wid, kind)
        except Exception as e:  # a broken link or frame: the worker is replaced, never left unread
            error = e
        self._lost(wid, worker, error)

    def _report(self, worker: Worker, kind: int, payload: Any) -> None:
        if kind == relay.HELLO:
            worker.pod = str(payload)
        elif kind == relay.ANSWERED:  # the requests a worker answered since its last flush
            for answer in payload:
                try:
                    self.answered(*answer)
                except Exception:  # one bad answer is logged; the others are kept
                    log.exception("worker: an answered request not taken")
        elif kind == relay.LIVE:
            self.live(worker.pod, *payload)
        elif kind == relay.SYNCED:
            worker.answering = True
        elif kind == relay.LOADED:
            name, version = payload
            worker.loaded[str(name)] = int(version)

    def answered(self, model: str, version: int, role: str, at: float, key_id: str | None, ids: list[str],
                 columns: dict[str, list[Any]], predictions: list[Any], probabilities: Any) -> None:  # fmt: skip
        """A worker answered a request: capture it, and feed production's drift windows."""
        host = self.hosts.get(model)
        served = _version_of(host, version) if host is not None else None
        recent = self._recent
        if served is not None:
            if (model, version) not in recent:
                recent[(model, version)] = (served.schema, served.classes)
                if len(recent) > RECENT_VERSIONS:
                    del recent[next(iter(recent))]
            schema, classes = served.schema, served.classes
        elif (model, version) in recent:  # swapped out since the worker answered: captured, not in drift windows
            schema, classes = recent[(model, version)]
        else:  # a version this agent never saw answers from: no schema to file it under
            return
        self.capture.record(model, schema, classes, ids, version, role, columns, predictions, probabilities, key_id,
                            at=at)  # fmt: skip
        if role == "production" and host is not None and served is not None and host.current is served:
            self.monitors[model].record(served, columns, predictions)

    def live(self, pod: str, key: str, joined_at: str, production: tuple[Any, ...], candidate: tuple[Any, ...]) -> None:
        """A worker's cumulative counts of rollout `key`, published under the worker's own name."""
        rollout = self._rollouts.get(key)
        if rollout is None or not pod:
            return
        registry = self.hosts[rollout.model].registry
        publish(registry, rollout, pod, _stats(production), _stats(candidate), started_at=joined_at or None)

    def refresh_drift(self) -> None:
        for name, monitor in list(self.monitors.items()):
            host = self.hosts.get(name)  # None while `adopt` starts it: its monitor comes first (a scrape then failed)
            if host is not None:
                monitor.refresh(host.current)


def _version_of(host: ModelHost, version: int) -> ServedModel | None:
    current = host.current
    if current is not None and current.version == version:
        return current
    active = host.trial.current if host.trial is not None else None
    if active is not None and active.candidate.version == version:
        return active.candidate
    return None


def _stats(fields: tuple[Any, ...]) -> VersionStats:
    return VersionStats(*fields)
