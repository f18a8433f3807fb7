"""Canary choice (sticky per key, share honoured) and the per-version live statistics of a pod."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry

from flywheel.release.judge import merge
from flywheel.release.rollout_state import Rollout
from flywheel.serving.live import LiveStats
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.routing import sticky_share, to_candidate
from flywheel.serving.trial import Active


def active(mode: str = "canary", share: float = 0.2, key: str = "v2-1") -> Active:
    rollout = Rollout(model="m", candidate=2, baseline=1, mode=mode, share=share,  # type: ignore[arg-type]
                      started_at="2026-01-01T00:00:00+00:00", started_by="t")  # fmt: skip
    return Active(rollout, candidate=None, key=key)  # type: ignore[arg-type]


def test_a_key_stays_on_one_side_and_the_share_holds_over_keys() -> None:
    a = active(share=0.2)
    keys = [f"key-{i}" for i in range(20_000)]
    first = [to_candidate(a, k) for k in keys]
    assert first == [to_candidate(a, k) for k in keys]  # sticky: the same key, the same side, every time
    share = sum(first) / len(keys)
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / len(keys)), share
    # another rollout reshuffles: the same keys are not always the guinea pigs
    other = [to_candidate(active(share=0.2, key="v3-2"), k) for k in keys]
    assert 0.1 < sum(x != y for x, y in zip(first, other, strict=True)) / len(keys) < 0.5


def test_share_without_a_key_is_random_and_shadow_never_answers() -> None:
    a = active(share=0.3)
    draws = sum(to_candidate(a, None) for _ in range(20_000)) / 20_000
    assert abs(draws - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 20_000)
    assert not any(to_candidate(active("shadow", 1.0), k) for k in ("a", "b", None))
    assert all(to_candidate(active(share=1.0), k) for k in ("a", "b", None))
    assert 0 <= sticky_share("r", "k") < 1


def live(classes: bool) -> LiveStats:
    stats = LiveStats(ServingMetrics(CollectorRegistry()), "m")
    profile: dict[str, Any] = (
        {"kind": "categorical", "categories": ["no", "yes"]} if classes else {"kind": "numeric", "edges": [0.0, 10.0]}
    )
    stats.reset(profile, classification=classes)
    return stats


def test_regression_statistics_as_the_judge_reads_them() -> None:
    s = live(classes=False)
    s.observe("production", 0.002, [-1.0, 5.0, 20.0], requests=3)
    s.observe("candidate", 0.004, [5.0], requests=1)
    s.error("candidate")
    s.compare([10.0, 0.0], [11.0, 0.0])  # relative differences 1/11 and 0 (both zero: no difference)
    prod, cand = s.snapshot()
    assert (prod.requests, prod.errors, prod.prediction_counts) == (3, 0, (1, 1, 1))
    assert (cand.requests, cand.errors, cand.prediction_counts) == (2, 1, (0, 1, 0))
    assert prod.latency_buckets[-1] == (math.inf, 3) and cand.latency_buckets[-1] == (math.inf, 1)
    assert prod.p99() is not None and cand.p99() is not None and prod.p99() < cand.p99()  # type: ignore[operator]
    assert cand.compared == 2 and cand.agreed is None
    assert math.isclose(cand.relative_difference_sum or 0, 1 / 11)
    assert prod.compared == 0 and prod.relative_difference_sum is None
    # two pods' snapshots merge into the fleet's
    merged = merge([cand, cand])
    assert (merged.requests, merged.errors, merged.compared) == (4, 2, 4)


def test_classification_agreement_and_reset() -> None:
    s = live(classes=True)
    s.compare(["yes", "no", "yes"], ["yes", "yes", "yes"])
    s.observe("candidate", 0.001, ["yes", "maybe"], requests=1)
    _, cand = s.snapshot()
    assert (cand.compared, cand.agreed) == (3, 2)
    assert cand.prediction_counts == (0, 1, 1)  # an unknown label counts in the last bin
    s.reset({"kind": "categorical", "categories": ["no", "yes"]}, classification=True)
    prod, cand = s.snapshot()
    assert cand.requests == cand.compared == prod.requests == 0


def test_outputs_that_are_not_finite_count_as_errors_and_as_the_largest_difference() -> None:
    from flywheel.serving.live import relative_differences

    s = live(classes=False)
    s.observe("candidate", 0.001, [float("nan")], requests=1)
    s.observe("candidate", 0.001, [5.0, float("inf")], requests=2)
    _, cand = s.snapshot()
    assert (cand.requests, cand.errors, sum(cand.prediction_counts)) == (3, 2, 1)
    assert relative_differences([1.0, 2.0], [float("nan"), 2.0]) == 2.0
    assert relative_differences([1e308], [-1e308]) == 2.0
    many = [1.0] * 100
    assert relative_differences(many, [float("nan")] * 100) == 200.0  # the numpy path agrees
    s.compare([1.0], [float("nan")])
    _, cand = s.snapshot()
    assert cand.relative_difference_sum == 2.0
    cand.check()  # a pod's own figures always pass the judge's checks
