"""Per-version live statistics of a running rollout, in one process: what the judge needs, and the
Prometheus series with the bounded `role` label (production / candidate).

Counted per request: requests and errors, and the model latency (wall time of the predict call that computed
the request's outputs, the same measure for both versions whatever the mode). Counted per row: predictions per
bin (the bins of the candidate's prediction profile, identical on every pod) and, in shadow mode, the rows both
versions predicted and how far apart they were. `snapshot` gives flywheel/judge.py's VersionStats, which the
host publishes for the judge (flywheel/rollout_stats.py).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flywheel.drift import bin_counts
from flywheel.judge import VersionStats
from flywheel.serving.metrics import LATENCY_BUCKETS, ServingMetrics

Role = Literal["production", "candidate"]
ROLES: tuple[Role, ...] = ("production", "candidate")
BOUNDS = (*LATENCY_BUCKETS, math.inf)
EPS = 1e-9
#: Up to this many values, binning and comparing run in plain Python: a single row costs ~1 us that way and
#: ~25 us through numpy's call overhead (this runs once per production predict call during a rollout).
SMALL = 32


@dataclass
class _Counts:
    bins: int
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(BOUNDS))
    predictions: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.predictions = [0] * self.bins


def relative_differences(production: list[Any], candidate: list[Any]) -> float:
    """Sum over rows of |c - p| / max(|p|, |c|): 0 when equal, at most 1 for the same sign, 2 for opposite signs."""
    if len(production) <= SMALL:
        return sum(abs(c - p) / max(abs(p), abs(c), EPS) for p, c in zip(production, candidate, strict=True))
    p = np.asarray(production, dtype="float64")
    c = np.asarray(candidate, dtype="float64")
    return float(np.sum(np.abs(c - p) / np.maximum(np.maximum(np.abs(p), np.abs(c)), EPS)))


class LiveStats:
    """One model's statistics for its current rollout; `reset` starts a new rollout from zero. Thread-safe."""

    def __init__(self, metrics: ServingMetrics, model: str) -> None:
        self.metrics, self.model = metrics, model
        self._lock = threading.Lock()
        self._profile: dict[str, Any] = {"kind": "categorical", "categories": []}
        self._roles = {r: _Counts(1) for r in ROLES}
        self._compared = 0
        self._agreed: int | None = None
        self._difference: float | None = None
        self._edges: list[float] = []
        self._index: dict[Any, int] = {}
        m = metrics  # the labelled series, looked up once (labels() costs more than the increment)
        self._children = {
            r: (m.rollout_requests.labels(model=model, role=r), m.rollout_latency.labels(model=model, role=r))
            for r in ROLES
        }
        self._compared_total = m.shadow_compared.labels(model=model)
        self._agreed_total = m.shadow_agreed.labels(model=model)
        self._difference_total = m.shadow_difference.labels(model=model)

    def reset(self, profile: dict[str, Any], classification: bool) -> None:
        """Start counting a new rollout, binning predictions by `profile` (the candidate's prediction_stats)."""
        numeric = profile["kind"] == "numeric"
        width = len(profile["edges"]) + 1 if numeric else len(profile["categories"]) + 1
        with self._lock:
            self._profile = profile
            self._edges = [float(e) for e in profile["edges"]] if numeric else []
            self._index = {} if numeric else {c: i for i, c in enumerate(profile["categories"])}
            self._roles = {r: _Counts(width) for r in ROLES}
            self._compared = 0
            self._agreed, self._difference = (0, None) if classification else (None, 0.0)

    def _bins(self, predictions: list[Any]) -> list[int]:
        """Counts per bin of `predictions`, as drift.bin_counts (which it calls for many values)."""
        width = len(self._edges) + 1 if self._profile["kind"] == "numeric" else len(self._index) + 1
        if len(predictions) > SMALL:
            return [int(n) for n in bin_counts(self._profile, predictions)][:width]
        counts = [0] * width
        if self._profile["kind"] == "numeric":
            for p in predictions:
                if p == p:  # NaN is not counted, as in bin_counts
                    counts[bisect.bisect_right(self._edges, p)] += 1
        else:
            last = width - 1
            for p in predictions:
                counts[self._index.get(p, last)] += 1
        return counts

    def observe(self, role: Role, seconds: float, predictions: list[Any], requests: int) -> None:
        """`requests` requests whose `predictions` one predict call of `seconds` computed."""
        counts = self._bins(predictions)
        slot = bisect.bisect_left(BOUNDS, seconds)
        with self._lock:
            c = self._roles[role]
            c.requests += requests
            c.latency[slot] += requests
            if len(counts) == len(c.predictions):
                c.predictions = [a + b for a, b in zip(c.predictions, counts, strict=True)]
        requests_total, latency = self._children[role]
        requests_total.inc(requests)
        for _ in range(requests):  # one observation per request, as the judge counts them
            latency.observe(seconds)

    def error(self, role: Role, requests: int = 1) -> None:
        with self._lock:
            self._roles[role].requests += requests
            self._roles[role].errors += requests
        self.metrics.rollout_requests.labels(model=self.model, role=role).inc(requests)
        self.metrics.rollout_errors.labels(model=self.model, role=role).inc(requests)

    def compare(self, production: list[Any], candidate: list[Any]) -> None:
        """Shadow: both versions' outputs for the same rows."""
        rows = len(production)
        with self._lock:
            self._compared += rows
            if self._agreed is not None:
                same = sum(1 for p, c in zip(production, candidate, strict=True) if p == c)
                self._agreed += same
                self._agreed_total.inc(same)
            else:
                diff = relative_differences(production, candidate)
                self._difference = (self._difference or 0.0) + diff
                self._difference_total.inc(diff)
        self._compared_total.inc(rows)

    def snapshot(self) -> tuple[VersionStats, VersionStats]:
        """(production, candidate) as the judge reads them."""
        with self._lock:
            out = {}
            for role, c in self._roles.items():
                cumulative = np.cumsum(c.latency)
                shadow = role == "candidate"
                out[role] = VersionStats(
                    requests=c.requests,
                    errors=c.errors,
                    latency_buckets=tuple((le, int(n)) for le, n in zip(BOUNDS, cumulative, strict=True)),
                    prediction_counts=tuple(int(n) for n in c.predictions),
                    compared=self._compared if shadow else 0,
                    agreed=self._agreed if shadow and self._compared else None,
                    relative_difference_sum=self._difference if shadow and self._compared else None,
                )
        return out["production"], out["candidate"]
