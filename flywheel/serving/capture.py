"""Prediction capture in a replica: every answered request (sampled) goes, off the request path, into a
bounded in-memory buffer that a background thread flushes to S3 as Parquet (docs/captures.md).

The request path extends the model's column lists (flywheel/serving/capture_buffer.py) with the values it already
holds (ids, checked inputs, outputs, the API key's id): a few list operations, nothing the garbage collector has
to walk.
When the buffer is full (S3 slow or down), new captures are dropped and counted, never waited for; a flush
that fails is dropped and counted too, and the next one is tried at the next interval.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.errors import InvalidInput
from flywheel.feedback.captures import capture_key
from flywheel.feedback.labels import ID_PATTERN
from flywheel.schema import Schema
from flywheel.serving.capture_buffer import ModelBuffer
from flywheel.serving.metrics import ServingMetrics
from flywheel.settings import ServeSettings

log = logging.getLogger(__name__)


class Capturer:
    """One per replica process; `record` on the event loop, `flush` on its own thread."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        pod: str,
        metrics: ServingMetrics,
        *,
        sample: float = 1.0,
        models: list[str] | None = None,
        prefix: str = "captures/",
        flush_seconds: float = 30.0,
        flush_rows: int = 10_000,
        max_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s3, self.bucket, self.pod, self.metrics = s3, bucket, pod, metrics
        self.sample, self.models, self.prefix = sample, set(models or ()), prefix
        self.flush_seconds, self.flush_rows, self.max_rows = flush_seconds, flush_rows, max_rows
        self.clock = clock  # the capture time of a request (a test sets the day)
        self._lock = threading.Lock()
        self._buffer: dict[tuple[str, int], ModelBuffer] = {}
        self._rows = 0
        self._writing = 0  # rows of the flush being written: with the buffer, at most max_rows in memory
        self._seq = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, s3: Any, settings: ServeSettings, pod: str, metrics: ServingMetrics) -> Capturer:
        return cls(
            s3,
            settings.bucket,
            pod,
            metrics,
            sample=settings.capture_sample,
            models=[m.strip() for m in settings.capture_models.split(",") if m.strip()],
            prefix=settings.capture_prefix,
            flush_seconds=settings.capture_flush_seconds,
            max_rows=settings.capture_max_rows,
        )

    def wanted(self, model: str) -> bool:
        return self.sample > 0 and (not self.models or model in self.models)

    def record(
        self,
        model: str,
        schema: Schema,
        classes: list[str],
        ids: list[str],
        version: int,
        role: str,
        columns: dict[str, list[Any]],
        predictions: list[Any],
        probabilities: list[dict[str, float]] | None,
        key_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Keep one answered request for the next flush (or drop it, counted, when the buffer is full). `key_id`:
        the id of the API key that made it (`KeyRecord.id`, never the key), None when the API runs without keys;
        `at`: when it was answered (unix seconds; default now)."""
        if not self.wanted(model) or (self.sample < 1 and random.random() >= self.sample):
            return
        rows = len(ids)
        key = (model, id(schema))  # a model hot-swapped to another schema mid-flush: its own file
        dropped = None
        with self._lock:
            if self._rows + self._writing + rows > self.max_rows:  # a slow write's rows still count
                dropped = "full"
            else:
                entry = self._buffer.get(key)
                if entry is None:
                    entry = self._buffer[key] = ModelBuffer(model, schema, classes)
                try:
                    when = self.clock() if at is None else at
                    entry.add(ids, version, role, when, columns, predictions, probabilities, key_id)
                    self._rows += rows
                except Exception:  # never the request's failure; nothing was added (ModelBuffer.add checks first)
                    dropped = "error"
            buffered = self._rows
        if dropped:
            self.metrics.capture_dropped.labels(model=model, reason=dropped).inc(rows)
            return
        if buffered >= self.flush_rows:
            self._wake.set()

    # -- the flush thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Flush what is buffered (shutdown: the last captures are written) and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            buffer, self._buffer, self._writing, self._rows = self._buffer, {}, self._rows, 0
        try:
            for entry in buffer.values():
                if entry.rows:
                    self._write(entry)
        finally:
            with self._lock:
                self._writing = 0

    def _write(self, entry: ModelBuffer) -> None:
        """One file per UTC day of the entry's requests (one, unless the flush spans midnight)."""
        model = entry.name
        for part in entry.by_day():
            n = part.rows
            try:
                body = part.parquet(self.pod)
                self._seq += 1
                key = capture_key(model, datetime.fromtimestamp(part.times[0], UTC), self.pod, self._seq, self.prefix)
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                                   ContentType="application/vnd.apache.parquet")  # fmt: skip
            except (ClientError, BotoCoreError) as e:
                self.metrics.capture_dropped.labels(model=model, reason="s3").inc(n)
                log.warning("%s: %d captured predictions dropped, S3 refused them: %s", model, n, e)
                continue
            except Exception:  # a capture must never take the replica down
                self.metrics.capture_dropped.labels(model=model, reason="error").inc(n)
                log.exception("%s: %d captured predictions dropped", model, n)
                continue
            self.metrics.captured.labels(model=model).inc(n)


ID = re.compile(ID_PATTERN)  # the rule a feedback file's ids follow


#: ids drawn from the OS's random source ahead of need, 64 a system call instead of one a request (a 1-row request
#: spent 3% of a worker's time at 3,000 req/s in `getrandom`); taken with list.pop (one step under the GIL), dropped
#: in a forked child, which must not hand out its parent's ids again
_spare_ids: list[str] = []
os.register_at_fork(after_in_child=_spare_ids.clear)


def _random_ids(n: int) -> list[str]:
    hexed = os.urandom(16 * n).hex()  # one system call, then 32 hex characters per id
    return [hexed[i : i + 32] for i in range(0, 32 * n, 32)]


def prediction_ids(given: Any, n: int) -> list[str]:
    """The request's ids for its `n` instances (checked), or new ones: random, 32 hex characters."""
    if given is None:
        if n > 1:
            return _random_ids(n)
        try:
            return [_spare_ids.pop()]
        except IndexError:
            fresh = _random_ids(64)
            _spare_ids.extend(fresh[1:])
            return fresh[:1]
    if not isinstance(given, list) or len(given) != n:
        got = f"{len(given)} ids" if isinstance(given, list) else type(given).__name__
        raise InvalidInput(f"'ids' must be a list of one id per instance ({n}), got {got}", field="ids")
    for i, value in enumerate(given):
        if not isinstance(value, str) or not ID.fullmatch(value):  # match() would take "abc\n" (`$`)
            raise InvalidInput(f"ids[{i}]: {value!r:.60} is not 1-128 characters of A-Z a-z 0-9 . _ : -",
                               field="ids", instance=i)  # fmt: skip
    return given
