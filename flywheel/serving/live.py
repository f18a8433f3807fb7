"""Per-version live statistics of a running rollout, in one process: what the judge needs, and the
Prometheus series with the bounded `role` label (production / candidate).

Counted per request: requests and errors, and the model latency (wall time of the predict call that computed
the request's outputs, the same measure for both versions whatever the mode). Counted per row: predictions per
bin (the bins of the candidate's prediction profile, identical on every pod) and, in shadow mode, the rows both
versions predicted and how far apart they were. `snapshot` gives flywheel/judge.py's VersionStats, which the
host publishes for the judge (flywheel/rollout_stats.py).
"""

from __future__ import annotations

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


@dataclass
class _Counts:
    bins: int
    requests: int = 0
    errors: int = 0
    latency: np.ndarray = field(default_factory=lambda: np.zeros(len(BOUNDS), dtype="int64"))
    predictions: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.predictions = np.zeros(self.bins, dtype="int64")


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

    def reset(self, profile: dict[str, Any], classification: bool) -> None:
        """Start counting a new rollout, binning predictions by `profile` (the candidate's prediction_stats)."""
        width = len(profile["edges"]) + 1 if profile["kind"] == "numeric" else len(profile["categories"]) + 1
        with self._lock:
            self._profile = profile
            self._roles = {r: _Counts(width) for r in ROLES}
            self._compared = 0
            self._agreed, self._difference = (0, None) if classification else (None, 0.0)

    def observe(self, role: Role, seconds: float, predictions: list[Any], requests: int) -> None:
        """`requests` requests whose `predictions` one predict call of `seconds` computed."""
        counts = bin_counts(self._profile, predictions)
        slot = int(np.searchsorted(BOUNDS, seconds, side="left"))
        with self._lock:
            c = self._roles[role]
            c.requests += requests
            c.latency[slot] += requests
            if counts.shape == c.predictions.shape:
                c.predictions += counts
        m = self.metrics
        m.rollout_requests.labels(model=self.model, role=role).inc(requests)
        latency = m.rollout_latency.labels(model=self.model, role=role)
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
        m = self.metrics
        with self._lock:
            self._compared += rows
            if self._agreed is not None:
                same = sum(1 for p, c in zip(production, candidate, strict=True) if p == c)
                self._agreed += same
                m.shadow_agreed.labels(model=self.model).inc(same)
            else:
                p = np.asarray(production, dtype="float64")
                c = np.asarray(candidate, dtype="float64")
                diff = float(np.sum(np.abs(c - p) / np.maximum(np.maximum(np.abs(p), np.abs(c)), EPS)))
                self._difference = (self._difference or 0.0) + diff
                m.shadow_difference.labels(model=self.model).inc(diff)
        m.shadow_compared.labels(model=self.model).inc(rows)

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
