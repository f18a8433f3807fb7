"""The request path's quick metric calls count exactly what prometheus_client's own calls count."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram

from flywheel.serving.metrics import LATENCY_BUCKETS, VALUE_BUCKETS, QuickHistogram, series_value

VALUES = [0.0, 0.0005, 0.00050001, 0.001, 0.3, 5.0, 5.0001, 1e9, math.inf, -1.0, math.nan, 1e-12, 2.5]


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], str]]:
    return [
        (s.name, s.labels, repr(s.value)) for m in registry.collect() for s in m.samples if "_created" not in s.name
    ]


def test_quick_histogram_counts_as_observe_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    a = Histogram("d", "d", ["route"], buckets=LATENCY_BUCKETS, registry=ours).labels("x")
    b = Histogram("d", "d", ["route"], buckets=LATENCY_BUCKETS, registry=theirs).labels("x")
    quick = QuickHistogram(a)
    for v in [*VALUES, *LATENCY_BUCKETS]:  # every bound itself falls in its own bucket
        quick.observe(v)
        b.observe(v)
    assert _samples(ours) == _samples(theirs)
    counts = {s.labels["le"]: s.value for m in ours.collect() for s in m.samples if s.name == "d_bucket"}
    assert counts["0.0005"] == 5 and counts["+Inf"] == len(VALUES) + len(LATENCY_BUCKETS) - 1  # NaN: no bucket


def test_a_gauges_value_goes_up_and_down_as_the_gauge_does() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("in_flight", "in flight", registry=registry)
    value = series_value(gauge)
    value.inc(1)
    value.inc(1)
    value.inc(-1)
    assert registry.get_sample_value("in_flight") == 1


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, VALUE_BUCKETS])
@pytest.mark.parametrize("size", [1, 5, 16, 17, 1000])
def test_observing_a_batch_counts_as_observing_each_value(size: int, buckets: tuple[float, ...]) -> None:
    """The agent's one call per batch of predictions: every bucket's count as `observe` per value gives (bounds
    themselves, NaN in no bucket, inf, negatives), the sum equal within rounding, the count exact."""
    rng = random.Random(size)
    pool = [*VALUES, *buckets, *(math.nextafter(b, -math.inf) for b in buckets), 1e-9, 7.5, -3.0, -0.0, 0.0]
    values = [rng.choice(pool) if rng.random() < 0.5 else rng.uniform(-1, 6) for _ in range(size)]
    for finite_only in (False, True):
        batch = [v for v in values if math.isfinite(v)] if finite_only else values
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        a = Histogram("p", "p", ["model"], buckets=buckets, registry=ours).labels("m")
        b = Histogram("p", "p", ["model"], buckets=buckets, registry=theirs).labels("m")
        QuickHistogram(a).observe_many(batch)
        for v in batch:
            b.observe(v)
        got = {(s.name, s.labels.get("le")): s.value for m in ours.collect() for s in m.samples}
        want = {(s.name, s.labels.get("le")): s.value for m in theirs.collect() for s in m.samples}
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key[0] == "p_sum":
                assert math.isnan(value) == math.isnan(got[key])
                assert math.isnan(value) or got[key] == pytest.approx(value, rel=1e-12, abs=1e-9)
            elif not key[0].endswith("_created"):
                assert got[key] == value, key
