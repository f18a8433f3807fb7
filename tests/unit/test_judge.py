"""The rollout judge's rules, their boundaries, its reasons, and stats merged across pods."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from flywheel.release.judge import VersionStats, judge, merge, quantile
from flywheel.release.rollout_state import Mode, Rollout, Thresholds

START = "2026-01-01T00:00:00+00:00"
EVEN = (250, 250, 250, 250)


def rollout(mode: Mode = "canary", **thresholds: Any) -> Rollout:
    return Rollout(
        model="houses",
        candidate=2,
        baseline=1,
        mode=mode,
        share=0.1,
        started_at=START,
        started_by="trainer",
        thresholds=Thresholds(**thresholds),
    )


def at(seconds: float) -> datetime:
    return datetime.fromisoformat(START) + timedelta(seconds=seconds)


def stats(
    requests: int = 1000, errors: int = 0, p99: float = 0.25, predictions: tuple[int, ...] = EVEN, **shadow: Any
) -> VersionStats:
    """p99 exactly `p99`: 99% of requests at or below it, the rest above the last finite bound."""
    buckets = ((p99, round(requests * 0.99)), (2 * p99, requests), (math.inf, requests))
    return VersionStats(requests, errors, buckets, predictions, **shadow)


# -- waiting and the time limit ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cand", "prod", "elapsed", "why"),
    [
        (stats(requests=499), stats(), 600, "candidate has 499 requests < min_requests 500"),
        (stats(), stats(requests=499), 600, "production has 499 requests < min_requests 500"),
        (stats(), stats(), 299, "299 s since the start < min_seconds 300"),
        (replace(stats(), latency_buckets=()), stats(), 600, "no latency histogram for the candidate"),
        (stats(), replace(stats(), prediction_counts=()), 600, "no prediction histogram for production"),
    ],
)
def test_waits_for_a_sufficient_sample(cand: VersionStats, prod: VersionStats, elapsed: float, why: str) -> None:
    verdict = judge(rollout(), cand, prod, at(elapsed))
    assert (verdict.action, verdict.reason) == ("wait", why)


def test_minimum_sample_boundaries_are_inclusive() -> None:
    verdict = judge(rollout(), stats(requests=500), stats(requests=500), at(300))
    assert verdict.action == "promote"
    assert verdict.reason.startswith("all thresholds held over 500 requests in 300 s: error_rate_increase 0")


def test_shadow_waits_for_comparisons() -> None:
    cand = stats(compared=499, agreed=499)
    assert judge(rollout("shadow"), cand, stats(), at(600)).reason == "499 shadow comparisons < min_requests 500"
    assert judge(rollout("shadow"), replace(cand, compared=500, agreed=500), stats(), at(600)).action == "promote"
    bare = judge(rollout("shadow"), stats(compared=500), stats(), at(600))
    assert bare.reason == "shadow comparisons carry neither agreement nor relative difference"


def test_aborts_at_max_seconds_without_a_sample() -> None:
    assert judge(rollout(), stats(requests=10), stats(), at(3599)).action == "wait"
    verdict = judge(rollout(), stats(requests=10), stats(), at(3600))
    assert verdict.action == "abort"
    assert verdict.reason == "no verdict after 3600 s >= max_seconds 3600: candidate has 10 requests < min_requests 500"


def test_a_late_judge_still_promotes_a_candidate_that_holds() -> None:
    assert judge(rollout(), stats(), stats(), at(7200)).action == "promote"


def test_a_decided_rollout_is_not_judged() -> None:
    with pytest.raises(ValueError, match="already aborted"):
        judge(replace(rollout(), status="aborted"), stats(), stats(), at(600))


# -- thresholds -------------------------------------------------------------------------------------------
def test_error_rate_increase() -> None:
    assert judge(rollout(), stats(errors=10), stats(), at(600)).action == "promote"  # +1.00 points: the limit
    verdict = judge(rollout(), stats(errors=11), stats(), at(600))
    assert verdict.action == "abort"
    assert verdict.reason == "error rate 1.10% vs production 0.00%: +1.10% > max_error_rate_increase 1.00%"
    assert verdict.figures["error_rate_increase"] == pytest.approx(0.011)
    assert judge(rollout(), stats(errors=30), stats(errors=20), at(600)).action == "promote"  # relative to prod


def test_p99_ratio() -> None:
    assert judge(rollout(), stats(p99=0.375), stats(p99=0.25), at(600)).action == "promote"  # exactly 1.5
    verdict = judge(rollout(), stats(p99=0.5), stats(p99=0.25), at(600))
    assert verdict.action == "abort"
    assert verdict.reason == "p99 latency 500.0 ms vs production 250.0 ms: ratio 2.00 > max_p99_ratio 1.5"
    assert verdict.figures["p99_ratio"] == 2.0


def test_prediction_psi() -> None:
    shifted = (400, 200, 200, 200)
    figure = judge(rollout(), stats(predictions=shifted), stats(), at(600)).figures["psi"]
    assert 0 < figure < 0.25
    assert judge(rollout(max_psi=figure), stats(predictions=shifted), stats(), at(600)).action == "promote"
    tighter = rollout(max_psi=math.nextafter(figure, 0))
    verdict = judge(tighter, stats(predictions=shifted), stats(), at(600))
    assert verdict.action == "abort" and verdict.reason.startswith(
        f"prediction PSI vs production {figure:.3f} > max_psi"
    )
    far = judge(rollout(), stats(predictions=(970, 10, 10, 10)), stats(), at(600))
    assert far.action == "abort" and far.figures["psi"] > 1


def test_prediction_histograms_must_share_bins() -> None:
    with pytest.raises(ValueError, match="candidate 3, production 4"):
        judge(rollout(), stats(predictions=(1, 2, 3)), stats(), at(600))


def test_shadow_agreement() -> None:
    assert judge(rollout("shadow"), stats(compared=1000, agreed=950), stats(), at(600)).action == "promote"
    verdict = judge(rollout("shadow"), stats(compared=1000, agreed=949), stats(), at(600))
    assert verdict.action == "abort"
    assert verdict.reason == "agreement with production 94.90% over 1000 requests < min_agreement 95.00%"


def test_shadow_relative_difference() -> None:
    ok = stats(compared=1000, relative_difference_sum=100.0)
    assert judge(rollout("shadow"), ok, stats(), at(600)).action == "promote"
    verdict = judge(rollout("shadow"), replace(ok, relative_difference_sum=101.0), stats(), at(600))
    assert verdict.action == "abort"
    assert (
        verdict.reason
        == "mean relative difference from production 0.101 over 1000 requests > max_relative_difference 0.1"
    )


def test_canary_ignores_shadow_figures() -> None:
    assert judge(rollout("canary"), stats(compared=1000, agreed=0), stats(), at(600)).action == "promote"


def test_every_broken_threshold_is_named() -> None:
    verdict = judge(rollout(), stats(errors=100, p99=1.0, predictions=(970, 10, 10, 10)), stats(), at(600))
    assert verdict.action == "abort"
    assert [part.split(" ")[0] for part in verdict.reason.split("; ")] == ["error", "p99", "prediction"]


def test_promotion_names_the_figures() -> None:
    verdict = judge(rollout("shadow"), stats(compared=1000, agreed=990), stats(), at(600))
    assert verdict.action == "promote"
    assert set(verdict.figures) == {"error_rate_increase", "p99_ratio", "psi", "agreement"}
    assert "agreement 0.99" in verdict.reason and "p99_ratio 1" in verdict.reason


# -- latency quantile and merging ---------------------------------------------------------------------------
def test_quantile_as_prometheus() -> None:
    assert quantile(0.99, []) is None
    assert quantile(0.99, [(0.1, 0), (math.inf, 0)]) is None
    assert quantile(0.5, [(0.1, 0), (0.2, 100), (math.inf, 100)]) == pytest.approx(0.15)  # linear in the bucket
    assert quantile(0.99, [(0.1, 50), (math.inf, 100)]) == 0.1  # in +Inf: the highest finite bound


def test_merge_two_pods() -> None:
    a = VersionStats(600, 6, ((0.1, 500), (0.5, 600), (math.inf, 600)), (300, 300), compared=600, agreed=590)
    b = VersionStats(400, 2, ((0.1, 100), (0.5, 390), (math.inf, 400)), (100, 300), compared=400, agreed=380)
    merged = merge([a, b])
    assert merged == VersionStats(
        1000, 8, ((0.1, 600), (0.5, 990), (math.inf, 1000)), (400, 600), compared=1000, agreed=970
    )
    assert merged.p99() == 0.5 and merged.error_rate == 0.008
    # judged across two replicas: each alone is below min_requests, together they are a sample
    prod, shadow = stats(p99=0.5, predictions=(500, 500)), rollout("shadow", min_requests=700)
    assert judge(shadow, a, prod, at(600)).reason == "candidate has 600 requests < min_requests 700"
    assert judge(shadow, merged, prod, at(600)).action == "promote"


def test_merge_regression_differences_and_an_empty_pod() -> None:
    a = VersionStats(10, 0, ((0.1, 10), (math.inf, 10)), (5, 5), compared=10, relative_difference_sum=0.5)
    fresh = VersionStats()  # a pod that has served nothing yet
    merged = merge([a, fresh, a])
    assert merged.latency_buckets == ((0.1, 20), (math.inf, 20)) and merged.prediction_counts == (10, 10)
    assert merged.relative_difference_sum == 1.0 and merged.agreed is None and merged.compared == 20
    assert merge([]) == VersionStats()


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (VersionStats(1, 0, ((0.2, 1), (math.inf, 1)), (1, 0)), "different latency buckets"),
        (VersionStats(1, 0, ((0.1, 1), (math.inf, 1)), (1, 0, 0)), "different numbers of prediction bins"),
        (VersionStats(1, 0, (), (), compared=1, relative_difference_sum=0.1), "both classification"),
    ],
)
def test_merge_refuses_incomparable_pods(other: VersionStats, match: str) -> None:
    pod = VersionStats(1, 0, ((0.1, 1), (math.inf, 1)), (1, 0), compared=1, agreed=1)
    with pytest.raises(ValueError, match=match):
        merge([pod, other])


def test_stats_round_trip_through_json_safe_dicts() -> None:
    s = stats(compared=10, agreed=9)
    doc = s.to_dict()
    assert doc["latency_buckets"][-1] == ["+Inf", 1000]
    assert VersionStats.from_dict(doc) == s
