"""A planted statistics object does not carry a rollout (issue 22, row 7): on moto's server, a `stats/ghost-pod.json`
claiming a million requests, or dated after now, is skipped, named in the pass's reason and logged, and the
candidate is not promoted; a policy's `min_pods` makes the judge wait for that many real pods."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.clock import now_iso
from flywheel.jobs.judge_pass import judge_model
from flywheel.registry.store import Registry
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import Rollout, Thresholds, load
from flywheel.release.rollout_stats import publish, stats_prefix
from tests.conftest import Stack
from tests.integration.rollout_models import MODEL, running


def stats(requests: int) -> VersionStats:
    buckets = ((0.1, round(requests * 0.99)), (0.2, requests), (math.inf, requests))
    return VersionStats(requests, 0, buckets, (requests // 4,) * 4)


def plant(stack: Stack, reg: Registry, rollout: Rollout, requests: int, updated_at: str) -> None:
    """What someone with write access under stats/ (not a replica) can put there: well-formed, flawless figures."""
    doc = {
        "pod": "ghost-pod",
        "model": MODEL,
        "updated_at": updated_at,
        "candidate": stats(requests).to_dict(),
        "production": stats(requests).to_dict(),
    }
    stack.put(stats_prefix(reg, rollout) + "ghost-pod.json", json.dumps(doc).encode())


def test_a_ghost_claiming_a_million_requests_is_skipped_named_and_not_promoted(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    reg, rollout = running(stack)
    publish(reg, rollout, "api-a", stats(20), stats(20), started_at=now_iso())  # real, but too little traffic
    plant(stack, reg, rollout, 500_000, now_iso())  # 1,000,000 requests a second or two into the rollout
    with caplog.at_level(logging.WARNING, logger="flywheel.release.rollout_stats"):
        result = judge_model(reg)
    assert result.action == "wait", result
    assert result.reason.startswith("candidate has 20 requests < min_requests 100; skipped stats/ghost-pod.json: ")
    assert "1000000 requests in " in result.reason and "is above 50000/s" in result.reason
    assert result.pods == 1 and result.reason.count("skipped ") == 1
    assert any("ghost-pod.json" in r.getMessage() and "above 50000/s" in r.getMessage() for r in caplog.records)
    found = load(reg)
    assert found is not None and found[0].running  # nothing decided on the ghost's figures
    assert reg.alias().version == 1  # type: ignore[union-attr]


def test_a_ghost_dated_after_now_is_skipped_even_with_a_plausible_count(stack: Stack) -> None:
    reg, rollout = running(stack)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    plant(stack, reg, rollout, 200, tomorrow)  # enough for min_requests, few enough for any rate
    result = judge_model(reg)
    assert result.action == "wait", result
    assert f"skipped stats/ghost-pod.json: updated_at {tomorrow} is after now" in result.reason
    assert reg.alias().version == 1  # type: ignore[union-attr]


def test_min_pods_waits_for_that_many_real_pods_then_promotes(stack: Stack) -> None:
    reg, rollout = running(stack, Thresholds(min_requests=100, min_seconds=0, min_pods=2))
    publish(reg, rollout, "api-a", stats(200), stats(200), started_at=now_iso())
    alone = judge_model(reg)
    assert (alone.action, alone.reason) == ("wait", "1 pods published usable statistics < min_pods 2")
    publish(reg, rollout, "api-b", stats(200), stats(200), started_at=now_iso())
    both = judge_model(reg)
    assert both.action == "promote" and both.pods == 2 and "skipped" not in both.reason, both
    assert reg.alias().version == 2  # type: ignore[union-attr]


def test_publish_records_when_the_pod_joined_and_old_objects_still_count(stack: Stack) -> None:
    reg, rollout = running(stack)
    joined = now_iso()
    publish(reg, rollout, "api-new", stats(60), stats(60), started_at=joined)
    publish(reg, rollout, "api-old", stats(60), stats(60))  # as an image from before started_at was published
    body = stack.s3.get_object(Bucket=stack.bucket, Key=stats_prefix(reg, rollout) + "api-new.json")["Body"].read()
    assert json.loads(body)["started_at"] == joined
    result = judge_model(reg)
    assert result.action == "promote" and result.pods == 2 and "skipped" not in result.reason, result
