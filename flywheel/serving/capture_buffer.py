"""One model's captured predictions waiting for the next flush, kept as columns (flywheel/serving/capture.py).

The request path extends a handful of long lists with the values it already holds (ids, floats, strings: none
of them tracked by the garbage collector). Keeping each request's own lists and dicts instead would leave
hundreds of thousands of small containers alive between flushes, which the cyclic garbage collector walks again
and again (measured with bench/capture.py: about a fifth more CPU per request at c=64). Per-request values
(version, role, time, the API key's id) are stored once per request with its row count and repeated per row at
flush, by numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from flywheel.feedback.captures import KEY_COLUMN, to_parquet
from flywheel.schema import Schema
from flywheel.serving.inputs import as_list

DAY = 86_400


@dataclass
class ModelBuffer:
    name: str
    schema: Schema  # held, so the buffer's key (the schema's id) stays unique while buffered
    classes: list[str]
    counts: list[int] = field(default_factory=list)  # per request: its rows
    versions: list[int] = field(default_factory=list)  # per request
    roles: list[str] = field(default_factory=list)  # per request
    times: list[float] = field(default_factory=list)  # per request: unix seconds
    keys: list[str | None] = field(default_factory=list)  # per request: the API key's id (None: no keys)
    ids: list[str] = field(default_factory=list)  # per row, from here on
    predictions: list[Any] = field(default_factory=list)
    probabilities: list[dict[str, float] | None] = field(default_factory=list)
    features: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = self.features or {f.name: [] for f in self.schema.features}

    def add(
        self,
        ids: list[str],
        version: int,
        role: str,
        at: float,
        columns: dict[str, list[Any]],
        predictions: list[Any],
        probabilities: list[dict[str, float]] | None,
        key_id: str | None = None,
    ) -> None:
        """Append one request, or raise ValueError and change nothing (every column stays aligned row by row).
        `key_id`: the id of the API key that made it (None when the API runs without keys)."""
        rows = len(ids)
        inputs: list[Any] = [as_list(columns.get(name, ())) for name in self.features]
        if (
            len(predictions) != rows
            or (probabilities is not None and len(probabilities) != rows)
            or any(len(values) != rows for values in inputs)
        ):
            raise ValueError(f"{self.name}: a request's inputs or outputs do not have one value per id ({rows})")
        self.counts.append(rows)
        self.versions.append(version)
        self.roles.append(role)
        self.times.append(at)
        self.keys.append(key_id)
        self.ids += ids
        self.predictions += predictions
        self.probabilities += [None] * rows if probabilities is None else probabilities
        for values, given in zip(self.features.values(), inputs, strict=True):
            values += given

    @property
    def rows(self) -> int:
        return len(self.ids)

    def by_day(self) -> list[ModelBuffer]:
        """One buffer per UTC day of the requests (itself, unless the flush spans midnight)."""
        days = np.floor_divide(np.asarray(self.times, dtype=np.float64), DAY).astype(np.int64)
        if days.size == 0 or days.min() == days.max():
            return [self]
        per_row = np.repeat(days, self.counts)
        out = []
        for day in np.unique(days):
            req, row = np.flatnonzero(days == day), np.flatnonzero(per_row == day)
            part = ModelBuffer(self.name, self.schema, self.classes)
            part.counts, part.versions = [self.counts[i] for i in req], [self.versions[i] for i in req]
            part.roles, part.times = [self.roles[i] for i in req], [self.times[i] for i in req]
            part.keys = [self.keys[i] for i in req]
            part.ids, part.predictions = [self.ids[i] for i in row], [self.predictions[i] for i in row]
            part.probabilities = [self.probabilities[i] for i in row]
            part.features = {k: [v[i] for i in row] for k, v in self.features.items()}
            out.append(part)
        return out

    def parquet(self, pod: str) -> bytes:
        """The capture file's bytes (flywheel/feedback/captures.py); per-request columns repeated per row by numpy."""
        counts = np.asarray(self.counts, dtype=np.int64)
        millis = (np.asarray(self.times, dtype=np.float64) * 1000).astype(np.int64)
        predictions = self.predictions
        if self.schema.task != "regression":
            predictions = [str(p) for p in predictions]
        columns: dict[str, Any] = {
            "prediction_id": pa.array(self.ids, pa.string()),
            "model": pa.repeat(pa.scalar(self.name, pa.string()), self.rows),
            "version": pa.array(np.repeat(np.asarray(self.versions, dtype=np.int64), counts)),
            "role": pa.array(np.repeat(np.asarray(self.roles, dtype=object), counts), pa.string()),
            "captured_at": pa.array(np.repeat(millis, counts), pa.timestamp("ms", tz="UTC")),
            "prediction": predictions,
            "probabilities": self._probabilities(),
            "features": self.features,
            KEY_COLUMN: pa.array(np.repeat(np.asarray(self.keys, dtype=object), counts), pa.string()),
        }
        meta = {"model": self.name, "pod": pod}
        if self.classes:
            meta["classes"] = json.dumps(self.classes)
        return to_parquet(self.schema, columns, meta)

    def _probabilities(self) -> pa.Array:
        """One list per row in the order of `classes` (null for a row answered without probabilities)."""
        kind = pa.list_(pa.float64())
        if not self.classes or all(p is None for p in self.probabilities):
            return pa.nulls(self.rows, kind)
        order = self.classes
        return pa.array([None if p is None else [p.get(c, 0.0) for c in order] for p in self.probabilities], kind)
