"""Every serving metric, defined once (docs/metrics.md). Base units; few, bounded labels.

`model` is the first label of every per-model series; its values are the models this replica serves
(bounded by the registrations), and "" on HTTP routes that address no model.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
# predictions of any dataset: symmetric log-spaced buckets wide enough for money, counts and scores
_POS = (0.1, 1, 10, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 100_000, 1_000_000)
VALUE_BUCKETS = tuple(sorted({-x for x in _POS} | {0.0} | set(_POS)))
RELOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServingMetrics:
    """One set per process; tests build their own on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else REGISTRY
        self.request_duration = Histogram(
            "flywheel_http_request_duration_seconds",
            "HTTP request latency by route template, status code and model.",
            ["route", "status", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "flywheel_http_requests_in_flight", "Requests being served now.", registry=r, multiprocess_mode="livesum"
        )  # summed over a replica's request workers
        self.rejected = Counter(
            "flywheel_http_requests_rejected",
            "Requests refused before any work: 429 over the concurrency limit (the replica's or one key's share), "
            "401 without a valid API key, 499 when the client closed the connection before its body arrived.",
            ["reason"],
            registry=r,
        )
        for reason in ("overloaded", "key_overloaded", "unauthenticated", "client_closed"):
            self.rejected.labels(reason=reason)
        self.predictions = Counter(
            "flywheel_predictions", "Rows predicted, by model and version.", ["model", "version"], registry=r
        )
        self.batch_size = Histogram(
            "flywheel_batch_size", "Rows per predict call after micro-batching.", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge("flywheel_model_info", "The model version this replica serves (=1).",
                                ["model", "version"], registry=r)  # fmt: skip
        self.model_version = Gauge("flywheel_model_version", "Served model version as a number.", ["model"], registry=r)
        self.ready = Gauge("flywheel_model_ready", "1 when the model is loaded and serving.", ["model"], registry=r)
        self.reloads = Counter(
            "flywheel_model_reloads", "Model swaps attempted, by model and result.", ["model", "result"], registry=r
        )
        self.fast_path = Gauge(
            "flywheel_model_fast_path",
            "1 when the model serves through its verified fast predictor, 0 through the Pipeline.",
            ["model"],
            registry=r,
        )
        self.fast_path_fallbacks = Counter(
            "flywheel_model_fast_path_fallbacks",
            "Versions served through the Pipeline because their fast path differed from it or failed.",
            ["model"],
            registry=r,
        )
        self.reload_duration = Histogram(
            "flywheel_model_reload_duration_seconds",
            "Download, verification and swap of a new version.",
            ["model"],
            buckets=RELOAD_BUCKETS,
            registry=r,
        )
        self.staleness = Gauge(
            "flywheel_model_staleness_seconds",
            "Seconds the newest promoted version has not been served (0 when current).",
            ["model"],
            registry=r,
        )
        self.feature_drift = Gauge(
            "flywheel_feature_drift_psi", "PSI of recent inputs vs training statistics.", ["model", "feature"],
            registry=r,
        )  # fmt: skip
        self.prediction_drift = Gauge(
            "flywheel_prediction_drift_psi", "PSI of recent predictions vs holdout predictions.", ["model"], registry=r
        )
        self.prediction_value = Histogram(
            "flywheel_prediction_value", "Predicted values (regression).", ["model"], buckets=VALUE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.predicted_class = Counter(
            "flywheel_predicted_class", "Predictions per class (classification).", ["model", "class"], registry=r
        )

        # rollouts (issue 14; docs/rollouts.md): `role` is production or candidate, nothing else
        self.rollout_requests = Counter(
            "flywheel_rollout_requests",
            "Requests of a running rollout, by the role of the version that computed them: production answered, "
            "candidate answered (canary) or also ran on (shadow).",
            ["model", "role"],
            registry=r,
        )
        self.rollout_errors = Counter(
            "flywheel_rollout_errors",
            "Requests a version failed to predict during a rollout; a canary candidate's are answered by production.",
            ["model", "role"],
            registry=r,
        )
        self.rollout_latency = Histogram(
            "flywheel_rollout_model_latency_seconds",
            "Model latency during a rollout: wall time of the predict call that computed a request's outputs.",
            ["model", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_compared = Counter(
            "flywheel_rollout_shadow_compared", "Shadow requests run by both versions and compared.", ["model"],
            registry=r,
        )  # fmt: skip
        self.shadow_agreed = Counter(
            "flywheel_rollout_shadow_agreed",
            "Shadow requests (classification) where the candidate predicted production's label.",
            ["model"],
            registry=r,
        )
        self.shadow_difference = Counter(
            "flywheel_rollout_shadow_relative_difference",
            "Sum over shadow requests (regression) of |candidate - production| / max(|production|, 1e-9).",
            ["model"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "flywheel_rollout_shadow_dropped",
            "Sampled shadow requests not run on the candidate because its queue was full.",
            ["model"],
            registry=r,
        )
        self.rollout_info = Gauge(
            "flywheel_rollout_info",
            "1 while a rollout runs: its mode, candidate and baseline (production) versions.",
            ["model", "mode", "candidate", "baseline"],
            registry=r,
        )
        self.rollout_share = Gauge(
            "flywheel_rollout_share", "The running rollout's share (0 when none runs).", ["model"], registry=r
        )
        self.rollout_decided = Gauge(
            "flywheel_rollout_decision_timestamp_seconds",
            "When the model's last rollout was promoted or aborted (Unix time), as read from the registry.",
            ["model", "decision"],
            registry=r,
        )

        # prediction capture (docs/captures.md)
        self.captured = Counter(
            "flywheel_captured_predictions", "Predictions written to the capture files.", ["model"], registry=r
        )
        self.capture_dropped = Counter(
            "flywheel_capture_dropped_predictions",
            "Predictions not captured: reason full (the buffer was full), s3 (the write was refused) or error.",
            ["model", "reason"],
            registry=r,
        )

        # live quality (docs/captures.md, "Live quality as metrics and alerts"): as published in
        # models/<model>/live-quality.json, only for the versions it lists (flywheel/serving/quality_watch.py)
        self.live_quality = Gauge(
            "flywheel_live_quality",
            "A version's primary metric on its labelled captured predictions over the trailing window.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.live_quality_holdout = Gauge(
            "flywheel_live_quality_holdout",
            "The gate's holdout score of a version, beside its live figure.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.live_quality_labelled = Gauge(
            "flywheel_live_quality_labelled",
            "Labelled captured predictions behind a version's live figure.",
            ["model", "version"],
            registry=r,
        )
        self.live_quality_computed = Gauge(
            "flywheel_live_quality_computed_timestamp_seconds",
            "When the model's published live quality was computed (Unix time).",
            ["model"],
            registry=r,
        )

    def add_model(self, model: str) -> None:
        """Create a served model's series at zero, so dashboards and alerts see it before its first event."""
        self.ready.labels(model=model).set(0)
        self.staleness.labels(model=model).set(0)
        self.fast_path.labels(model=model).set(0)
        self.fast_path_fallbacks.labels(model=model)
        for result in ("success", "failure"):
            self.reloads.labels(model=model, result=result)
        self.rollout_share.labels(model=model).set(0)
        self.captured.labels(model=model)
        for reason in ("full", "s3", "error"):
            self.capture_dropped.labels(model=model, reason=reason)
        for role in ("production", "candidate"):
            self.rollout_requests.labels(model=model, role=role)
            self.rollout_errors.labels(model=model, role=role)


class QuickHistogram:
    """One series of a histogram (`histogram.labels(...)`, or an unlabelled histogram) observed on the request path:
    the bucket found by bisection, and none of prometheus_client's per-call checks (labels, exemplars) that a
    series taken once does not need. Same counts as its `observe` (prometheus-client 0.26: the first bucket whose
    bound is >= the value): half its cost (0.8 us), twice per request."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, series: Histogram) -> None:
        self.bounds: tuple[float, ...] = tuple(series._upper_bounds)
        self.buckets: list[Any] = series._buckets
        self.total: Any = series._sum

    def observe(self, amount: float) -> None:
        self.total.inc(amount)
        if amount == amount:  # a NaN falls in no bucket, as with prometheus_client (+Inf is the last bound)
            self.buckets[bisect_left(self.bounds, amount)].inc(1)

    def observe_many(self, values: Sequence[float]) -> None:
        """`observe` for each of `values` (Python numbers: a numpy float32 would be compared in float64): over 16,
        each bucket and the sum changed once (the sum within rounding: added up first), not once per value. The
        agent observes every prediction of a batch: 1,000 `observe` calls were a sixth of its time on 1,000-row
        requests (py-spy)."""
        if len(values) <= 16:
            for v in values:
                self.observe(v)
            return
        known = np.asarray(values, dtype=np.float64)
        known = known[~np.isnan(known)]  # NaN: in no bucket
        per_bucket = np.bincount(np.searchsorted(self.bounds, known, side="left"), minlength=len(self.bounds))
        self.total.inc(float(sum(values)))
        for i in np.flatnonzero(per_bucket).tolist():
            self.buckets[i].inc(int(per_bucket[i]))


def series_value(series: Gauge | Counter) -> Any:
    """The value a series (unlabelled, or `.labels(...)`'s) keeps: `inc(amount)` on it is the series' own `inc`
    without prometheus_client's per-call check, for a series changed on every request (a gauge goes down with
    `inc(-1)`)."""
    return series._value
