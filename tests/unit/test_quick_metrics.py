"""The request path's quick metric calls count exactly what prometheus_client's own calls count."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge, Histogram

from flywheel.serving.metrics import LATENCY_BUCKETS, QuickHistogram, series_value

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
