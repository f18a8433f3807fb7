"""One /metrics for a replica whose requests are served by workers (app/serve.py): the agent's own series (model
versions, reloads, drift, captures written) and every worker's (requests, latency, predictions, rollout counts),
which each worker writes to prometheus_client's multiprocess files, merged into one exposition.

A series both sides have (a counter created at zero in each) is summed; a gauge takes the workers' value where
they have one (the requests in flight), else the agent's: workers set no other gauge.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: set in a worker's environment before prometheus_client loads: its values go to files the agent reads
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class MergedCollector(Collector):
    def __init__(self, own: CollectorRegistry, directory: str) -> None:
        self.own = own
        self.workers = MultiProcessCollector(None, path=directory)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for from_workers, families in ((False, self.own.collect()), (True, self.workers.collect())):
            for family in families:
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                    values[family.name] = {}
                seen = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in seen and family.type != "gauge":
                        seen[key] += sample.value
                    elif key not in seen or from_workers:
                        seen[key] = sample.value
        for name, family in merged.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def merged_registry(own: CollectorRegistry, directory: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(own, directory))
    return registry


#: how often a request worker writes its metric values to its multiprocess files (and at its exit)
WRITE_EVERY_SECONDS = 0.1
_lock = threading.Lock()
_changed: set[Any] = set()


def defer_worker_values() -> Callable[[], None]:
    """Make this process's metrics (a request worker's: app/worker.py) change in memory and reach the multiprocess
    files every `WRITE_EVERY_SECONDS` from a thread of their own, instead of a lock, a `getpid()` system call and a
    file write per change: a 1-row request makes seven changes (in flight up and down, its duration, the batch's
    size and rows), 13 of a worker's ~100 us of CPU per request at c=64. The agent's /metrics is at most that much
    behind. A worker is forked by its agent's zygote (app/worker_zygote.py) before any of its metrics exist, and
    never forked again, so its pid is read once. Call before any metric is created; call what it returns last, at
    exit."""
    pid = os.getpid()
    written = values.MultiProcessValue(lambda: pid)

    class DeferredValue(written):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with _lock:  # creating a value may add its key to the file: file changes are serialised
                super().__init__(*args, **kwargs)

        def inc(self, amount: float) -> None:
            with _lock:
                self._value += amount
                self._timestamp = 0.0
                _changed.add(self)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with _lock:
                self._value, self._timestamp = value, timestamp or 0.0
                _changed.add(self)

        def get(self) -> float:
            with _lock:
                return float(self._value)

    values.ValueClass = DeferredValue
    stop = threading.Event()

    def write_changes() -> None:
        with _lock:
            for value in _changed:
                value._file.write_value(value._key, value._value, value._timestamp)
            _changed.clear()

    def write_forever() -> None:
        while not stop.wait(WRITE_EVERY_SECONDS):
            try:
                write_changes()
            except Exception:  # the next round tries again: a worker's metrics must not freeze silently
                log.exception("writing this worker's metrics failed")

    threading.Thread(target=write_forever, name="metrics-writer", daemon=True).start()

    def finish() -> None:
        stop.set()
        write_changes()

    return finish
