"""The judge refuses figures that cannot be true: requests a process could not have run in the time, timestamps
out of order with the rollout, the clock or each other, fewer reporting pods than the policy's minimum; and says
which statistics object it skipped (issue 22, row 7)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pytest

from flywheel.release.judge import NAMED_SKIPS, VersionStats, judge, merge
from flywheel.release.pod_reports import CLOCK_SKEW_SECONDS, MAX_POD_REQUESTS_PER_SECOND, PodReport, implausible, screen
from flywheel.release.rollout_state import Rollout, Thresholds

START = "2026-01-01T00:00:00+00:00"
QUICK = Thresholds(min_requests=100, min_seconds=0)


def rollout(**thresholds: Any) -> Rollout:
    t = Thresholds(**{"min_requests": 100, "min_seconds": 0, **thresholds})
    return Rollout("houses", 2, 1, "canary", 0.5, START, "trainer", thresholds=t)


def at(seconds: float) -> datetime:
    return datetime.fromisoformat(START) + timedelta(seconds=seconds)


def stats(requests: int) -> VersionStats:
    buckets = ((0.1, round(requests * 0.99)), (0.2, requests), (math.inf, requests))
    return VersionStats(requests, 0, buckets, (requests // 4,) * 4)


def report(requests: int, updated: float, started: float | None = None, name: str = "stats/pod-a.json") -> PodReport:
    """One pod that ran `requests` of each version, counted at `updated` s, joined at `started` s."""
    return PodReport(name, stats(requests), stats(requests), at(updated), None if started is None else at(started))


def doc(requests: int, **times: str) -> dict[str, Any]:
    return {"candidate": stats(requests).to_dict(), "production": stats(requests).to_dict(), **times}


# -- the request ceiling -------------------------------------------------------------------------------------
def test_the_ceiling_is_a_generous_multiple_of_what_a_process_measures() -> None:
    assert MAX_POD_REQUESTS_PER_SECOND >= 10 * 2_800  # docs/serving.md: ~2,800 req/s for one process


def test_a_ghost_claiming_a_million_requests_ten_seconds_in_is_refused() -> None:
    ghost = report(500_000, updated=10, name="stats/ghost-pod.json")  # 1,000,000 requests of both versions
    assert implausible(rollout(), ghost, at(10)) == "1000000 requests in 10 s is above 50000/s"
    # the ceiling bounds a rate, not a total: the same claim dated 20 s in fits 50,000/s x (20 + 1)
    assert implausible(rollout(), report(500_000, updated=20), at(20)) == ""


def test_requests_up_to_the_ceiling_are_believed_and_one_more_is_not() -> None:
    # 100 s counted (+1 for whole-second timestamps): 101 x 50,000 requests of both versions together
    limit = MAX_POD_REQUESTS_PER_SECOND * 101
    assert implausible(rollout(), report(limit // 2, updated=100), at(100)) == ""
    odd = PodReport("stats/p.json", stats(limit // 2 + 1), stats(limit // 2), at(100))
    assert implausible(rollout(), odd, at(100)).startswith(f"{limit + 1} requests in 100 s is above")


def test_the_ceiling_counts_from_the_pods_own_start() -> None:
    # the rollout began 1,000 s ago but this process joined 10 s ago: 600,000 is too many for 10 s
    assert implausible(rollout(), report(300_000, updated=1000, started=990), at(1000)).startswith(
        "600000 requests in 10 s"
    )
    assert implausible(rollout(), report(300_000, updated=1000), at(1000)) == ""  # old object: since the rollout


def test_the_ceiling_counts_up_to_the_earlier_of_the_figures_and_now() -> None:
    """A pod clock ahead (within the skew) gives no extra seconds: figures dated 50 s ahead count up to now."""
    assert implausible(rollout(), report(300_000, updated=60), at(10)).startswith("600000 requests in 10 s")


# -- timestamps ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("updated", "started", "now", "why"),
    [
        (600 + CLOCK_SKEW_SECONDS + 1, None, 600, "updated_at 2026-01-01T00:11:01+00:00 is after now"),
        (-CLOCK_SKEW_SECONDS - 1, None, 600, "updated_at 2025-12-31T23:58:59+00:00 is before the rollout began"),
        (300, 301, 600, "started_at 2026-01-01T00:05:01+00:00 is after its own figures' updated_at"),
        (300, -CLOCK_SKEW_SECONDS - 1, 600, "started_at 2025-12-31T23:58:59+00:00 is before the rollout began"),
        (3600, 3000, 600, "updated_at 2026-01-01T01:00:00+00:00 is after now"),  # started after now too
    ],
)
def test_timestamps_out_of_order_are_refused(updated: float, started: float | None, now: float, why: str) -> None:
    assert implausible(rollout(), report(10, updated, started), at(now)).startswith(why)


def test_clocks_a_little_apart_are_tolerated() -> None:
    """The operator's laptop that started the rollout, and the pods, may disagree by up to CLOCK_SKEW_SECONDS."""
    assert implausible(rollout(), report(10, updated=-5, started=-30), at(0)) == ""
    assert implausible(rollout(), report(10, updated=30, started=20), at(0)) == ""


def test_documents_are_read_with_or_without_started_at() -> None:
    old = PodReport.from_dict("stats/old.json", doc(10, updated_at="2026-01-01T00:01:00+00:00"))
    assert old.started_at is None and old.updated_at == at(60) and old.requests == 20
    new = PodReport.from_dict(
        "stats/new.json", doc(10, updated_at="2026-01-01T00:01:00+00:00", started_at="2026-01-01T00:00:30+00:00")
    )
    assert new.started_at == at(30)


@pytest.mark.parametrize(
    ("times", "match"),
    [
        ({}, "updated_at is not a timestamp"),
        ({"updated_at": "2026-01-01T00:01:00"}, "has no time zone"),
        ({"updated_at": "yesterday"}, "Invalid isoformat"),
        ({"updated_at": "2026-01-01T00:01:00+00:00", "started_at": 5}, "started_at is not a timestamp"),
    ],
)
def test_documents_without_usable_timestamps_are_unreadable(times: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PodReport.from_dict("stats/x.json", doc(10, **times))


# -- screening and the verdict -------------------------------------------------------------------------------
def test_a_ghost_among_honest_pods_is_skipped_and_named_and_the_honest_figures_judged() -> None:
    r = rollout()
    honest = report(20, updated=10, started=1, name="stats/api-a.json")  # 20 requests each: below min_requests
    ghost = report(500_000, updated=10, name="stats/ghost-pod.json")
    kept, skipped = screen(r, [honest, ghost], at(10))
    assert kept == [honest]
    assert skipped == ["skipped stats/ghost-pod.json: 1000000 requests in 10 s is above 50000/s"]
    verdict = judge(r, merge(p.candidate for p in kept), merge(p.production for p in kept), at(10), pods=1,
                    skipped=skipped)  # fmt: skip
    assert verdict.action == "wait"
    assert verdict.reason == (
        "candidate has 20 requests < min_requests 100; "
        "skipped stats/ghost-pod.json: 1000000 requests in 10 s is above 50000/s"
    )


def test_without_screening_the_ghost_would_have_promoted() -> None:
    """What the judge did before: the planted figures alone made a sample that held every threshold."""
    assert judge(rollout(), stats(500_000), stats(500_000), at(10)).action == "promote"


def test_a_promotion_still_names_what_it_left_out() -> None:
    verdict = judge(rollout(), stats(200), stats(200), at(40), skipped=["skipped stats/x.json: unreadable"])
    assert verdict.action == "promote" and verdict.reason.endswith("; skipped stats/x.json: unreadable")


def test_many_skipped_objects_are_counted_beyond_the_first_few() -> None:
    skipped = [f"skipped stats/g{i}.json: {'x' * 1000}" for i in range(NAMED_SKIPS + 3)]
    reason = judge(rollout(), stats(200), stats(200), at(40), skipped=skipped).reason
    assert reason.count("skipped stats/g") == NAMED_SKIPS and reason.endswith("; and 3 more statistics objects skipped")
    assert len(reason) < 2000  # a planted object's text cannot bloat rollout.json


# -- min_pods ------------------------------------------------------------------------------------------------
def test_min_pods_defaults_to_one_so_nothing_changes_by_default() -> None:
    assert Thresholds().min_pods == 1 and Thresholds.from_dict({"min_requests": 5}).min_pods == 1
    assert judge(rollout(), stats(200), stats(200), at(40)).action == "promote"


def test_fewer_publishing_pods_than_min_pods_wait_then_abort_at_the_time_limit() -> None:
    three = rollout(min_pods=3)
    assert judge(three, stats(200), stats(200), at(40), pods=3).action == "promote"
    one = judge(three, stats(200), stats(200), at(40), pods=1)
    assert (one.action, one.reason) == ("wait", "1 pods published usable statistics < min_pods 3")
    late = judge(three, stats(200), stats(200), at(3600), pods=2)
    assert late.action == "abort" and late.reason.endswith("2 pods published usable statistics < min_pods 3")


def test_min_pods_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_pods"):
        Thresholds(min_pods=0)
