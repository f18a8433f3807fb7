"""Per-version live statistics of a running rollout, in one process: what the judge needs, and the
Prometheus series with the bounded `role` label (production / candidate).

Counted per request: requests and errors, and the model latency (wall time of the predict call that computed
the request's outputs, the same measure for both versions whatever the mode). Counted per row: predictions per
bin (the bins of the candidate's prediction profile, identical on every pod) and, in shadow mode, the rows both
versions predicted and how far apart they were. `snapshot` gives flywheel/release/judge.py's VersionStats, which the
host publishes for the judge (flywheel/release/rollout_stats.py).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flywheel.release.judge import VersionStats
from flywheel.serving.metrics import LATENCY_BUCKETS, ServingMetrics
from flywheel.training.drift import bin_counts

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
    """Sum over rows of |c - p| / max(|p|, |c|): 0 when equal, at most 1 for the same sign, 2 for opposite signs;
    a row where either output is not finite counts as 2, the most two outputs can differ."""
    if len(production) <= SMALL:
        total = 0.0
        for a, b in zip(production, candidate, strict=True):
            d = abs(b - a) / max(abs(a), abs(b), EPS)
            total += d if math.isfinite(d) else 2.0
        return total
    p = np.asarray(production, dtype="float64")
    c = np.asarray(candidate, dtype="float64")
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.abs(c - p) / np.maximum(np.maximum(np.abs(p), np.abs(c)), EPS)
    return float(np.sum(np.where(np.isfinite(rel), rel, 2.0)))


@dataclass(frozen=True)
class _Binning:
    """How predictions are binned for one rollout: the candidate's prediction profile."""

    profile: dict[str, Any]
    edges: tuple[float, ...] = ()
    index: dict[Any, int] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: dict[str, Any]) -> _Binning:
        if profile["kind"] == "numeric":
            return cls(profile, edges=tuple(float(e) for e in profile["edges"]))
        return cls(profile, index={c: i for i, c in enumerate(profile["categories"])})

    @property
    def numeric(self) -> bool:
        return bool(self.profile["kind"] == "numeric")

    @property
    def width(self) -> int:
        return len(self.edges) + 1 if self.numeric else len(self.index) + 1

    def counts(self, predictions: list[Any]) -> tuple[list[int], int]:
        """(counts per bin, as drift.bin_counts, which it calls for many values; outputs not binned because
        they are not finite numbers: regression only)."""
        if self.numeric:
            finite = [p for p in predictions if isinstance(p, int | float) and math.isfinite(p)]
            bad = len(predictions) - len(finite)
            if len(finite) > SMALL:
                return [int(n) for n in bin_counts(self.profile, finite)], bad
            counts = [0] * self.width
            for p in finite:
                counts[bisect.bisect_right(self.edges, p)] += 1
            return counts, bad
        if len(predictions) > SMALL:
            return [int(n) for n in bin_counts(self.profile, predictions)], 0
        counts, last = [0] * self.width, self.width - 1
        for p in predictions:
            counts[self.index.get(p, last)] += 1
        return counts, 0


class LiveStats:
    """One model's statistics for its current rollout; `reset` starts a new rollout from zero. Thread-safe."""

    def __init__(self, metrics: ServingMetrics, model: str) -> None:
        self.metrics, self.model = metrics, model
        self._lock = threading.Lock()
        self._binning = _Binning.of({"kind": "categorical", "categories": []})
        self._roles = {r: _Counts(1) for r in ROLES}
        self._compared = 0
        self._agreed: int | None = None
        self._difference: float | None = None
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
        binning = _Binning.of(profile)
        with self._lock:
            self._binning = binning  # one reference: an observe in flight bins by the old or the new, never half
            self._roles = {r: _Counts(binning.width) for r in ROLES}
            self._compared = 0
            self._agreed, self._difference = (0, None) if classification else (None, 0.0)

    def observe(self, role: Role, seconds: float | None, predictions: list[Any], requests: int) -> None:
        """`requests` requests whose `predictions` one predict call of `seconds` computed (None: not timed, as a
        shadow backlog run merged). A regression output that is not finite (NaN, inf) is a failure: those
        requests count as errors, not as predictions."""
        counts, bad = self._binning.counts(predictions)
        slot = None if seconds is None else bisect.bisect_left(BOUNDS, seconds)
        failed = min(bad, requests)
        with self._lock:
            c = self._roles[role]
            c.requests += requests
            c.errors += failed
            if slot is not None:
                c.latency[slot] += requests
            if len(counts) == len(c.predictions):
                c.predictions = [a + b for a, b in zip(c.predictions, counts, strict=True)]
        requests_total, latency = self._children[role]
        requests_total.inc(requests)
        if failed:
            self.metrics.rollout_errors.labels(model=self.model, role=role).inc(failed)
        if seconds is not None:
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
