"""Prediction capture in a replica: every answered request (sampled) goes, off the request path, into a
bounded in-memory buffer that a background thread flushes to S3 as Parquet (docs/captures.md).

The request path only appends a reference to what it already holds (ids, checked columns, outputs): O(1).
When the buffer is full (S3 slow or down), new captures are dropped and counted, never waited for; a flush
that fails is dropped and counted too, and the next one is tried at the next interval.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.captures import capture_key, to_parquet
from flywheel.errors import InvalidInput
from flywheel.feedback import ID_PATTERN
from flywheel.schema import Schema
from flywheel.serving.metrics import ServingMetrics
from flywheel.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass
class _Request:
    ids: list[str]
    version: int
    role: str
    at: datetime
    columns: dict[str, list[Any]]
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None


@dataclass
class _Model:
    schema: Schema
    classes: list[str]
    requests: list[_Request] = field(default_factory=list)


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
    ) -> None:
        self.s3, self.bucket, self.pod, self.metrics = s3, bucket, pod, metrics
        self.sample, self.models, self.prefix = sample, set(models or ()), prefix
        self.flush_seconds, self.flush_rows, self.max_rows = flush_seconds, flush_rows, max_rows
        self._lock = threading.Lock()
        self._buffer: dict[str, _Model] = {}
        self._rows = 0
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
    ) -> None:
        """Keep one answered request for the next flush (or drop it, counted, when the buffer is full)."""
        if not self.wanted(model) or (self.sample < 1 and random.random() >= self.sample):
            return
        rows = len(ids)
        with self._lock:
            if self._rows + rows > self.max_rows:
                full = True
            else:
                full = False
                self._rows += rows
                entry = self._buffer.get(model)
                if entry is None or entry.schema is not schema:
                    entry = self._buffer.setdefault(model, _Model(schema, classes))
                entry.requests.append(
                    _Request(ids, version, role, datetime.now(UTC), columns, predictions, probabilities)
                )
            buffered = self._rows
        if full:
            self.metrics.capture_dropped.labels(model=model, reason="full").inc(rows)
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
            buffer, self._buffer, self._rows = self._buffer, {}, 0
        for model, entry in buffer.items():
            if entry.requests:
                self._write(model, entry)

    def _write(self, model: str, entry: _Model) -> None:
        rows = sum(len(r.ids) for r in entry.requests)
        by_day: dict[str, list[_Request]] = {}
        for r in entry.requests:
            by_day.setdefault(r.at.strftime("%Y-%m-%d"), []).append(r)
        for requests in by_day.values():
            n = sum(len(r.ids) for r in requests)
            try:
                body = self._parquet(model, entry, requests)
                self._seq += 1
                key = capture_key(model, requests[0].at, self.pod, self._seq, self.prefix)
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
        log.debug("%s: flushed %d captured predictions", model, rows)

    def _parquet(self, model: str, entry: _Model, requests: list[_Request]) -> bytes:
        schema = entry.schema
        columns: dict[str, Any] = {k: [] for k in ("prediction_id", "model", "version", "role", "captured_at",
                                                   "prediction", "probabilities")}  # fmt: skip
        features: dict[str, list[Any]] = {f.name: [] for f in schema.features}
        for r in requests:
            n = len(r.ids)
            columns["prediction_id"] += r.ids
            columns["model"] += [model] * n
            columns["version"] += [r.version] * n
            columns["role"] += [r.role] * n
            columns["captured_at"] += [r.at] * n
            columns["prediction"] += [str(p) for p in r.predictions] if schema.task != "regression" else r.predictions
            if r.probabilities is None:
                columns["probabilities"] += [None] * n
            else:
                columns["probabilities"] += [[p.get(c, 0.0) for c in entry.classes] for p in r.probabilities]
            for name, values in features.items():
                values += r.columns[name]
        columns["features"] = features
        meta = {"model": model, "pod": self.pod}
        if entry.classes:
            meta["classes"] = json.dumps(entry.classes)
        return to_parquet(schema, columns, meta)


ID = re.compile(ID_PATTERN)  # the rule a feedback file's ids follow


def prediction_ids(given: Any, n: int) -> list[str]:
    """The request's ids for its `n` instances (checked), or new ones: random, 32 hex characters."""
    if given is None:
        return [secrets.token_hex(16) for _ in range(n)]
    if not isinstance(given, list) or len(given) != n:
        got = f"{len(given)} ids" if isinstance(given, list) else type(given).__name__
        raise InvalidInput(f"'ids' must be a list of one id per instance ({n}), got {got}", field="ids")
    for i, value in enumerate(given):
        if not isinstance(value, str) or not ID.match(value):
            raise InvalidInput(f"ids[{i}]: {value!r:.60} is not 1-128 characters of A-Z a-z 0-9 . _ : -",
                               field="ids", instance=i)  # fmt: skip
    return given
