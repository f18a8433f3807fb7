"""The judge Lambda's handler against moto's server: a scheduled run promotes or aborts a running rollout from
the statistics the pods published, and a model whose pass fails is reported and counted, never raised.

The versions here are manifests only: the judge never loads a model, it reads the rollout, the pods'
statistics, the alias and (to move the alias) the candidate's manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from flywheel.feedback.quality_summary import MIN_LABELLED, TOLERANCE, summary_key
from flywheel.registry import history
from flywheel.registry.store import Registry
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_actions import JUDGE, begin
from flywheel.release.rollout_state import Rollout, Thresholds, load, rollout_key
from flywheel.release.rollout_stats import publish
from lambdas.judge import handler as judge
from tests.conftest import Stack
from tests.helpers import FakeLambdaContext

MODEL = "savings"  # the deployment's default model: judged without a registration, as in a fresh bucket
SCHEDULED = {
    "version": "0",
    "id": "5f1c8a1e-0000-4000-8000-000000000000",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-01-01T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/Flywheel-dev-RolloutJudgeSchedule"],
    "detail": {},
}
THRESHOLDS = Thresholds(min_requests=100, min_seconds=0)


@pytest.fixture(autouse=True)
def fresh_handler(stack: Stack) -> Iterator[None]:
    """The handler caches its settings and client: each test's bucket (FLYWHEEL_BUCKET) is a new one."""
    judge._settings.cache_clear()
    judge._s3.cache_clear()
    yield
    judge._settings.cache_clear()
    judge._s3.cache_clear()


def stats(requests: int, errors: int = 0) -> VersionStats:
    """One pod's counts: p99 at 100 ms, predictions spread evenly over four bins."""
    buckets = ((0.1, round(requests * 0.99)), (0.2, requests), (math.inf, requests))
    return VersionStats(requests, errors, buckets, (requests // 4,) * 4)


def running_rollout(stack: Stack) -> tuple[Registry, Rollout]:
    """v1 in production, v2 published, a canary rollout of v2 against v1."""
    reg = Registry(stack.s3, stack.bucket, MODEL)
    for v in (1, 2):
        stack.put(reg.version_key(v, "manifest.json"), json.dumps({"version": v, "status": "promoted"}).encode())
    reg.move_alias(1, None, actor="trainer", reason="first version")
    rollout = begin(reg, 2, actor="trainer", mode="canary", share=0.1, thresholds=THRESHOLDS)
    return reg, rollout


def run(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """One scheduled invocation: its result, and the EMF metrics it printed ({name: value})."""
    capsys.readouterr()
    result: dict[str, Any] = judge.handler(SCHEDULED, FakeLambdaContext())
    emitted: dict[str, float] = {}
    for line in capsys.readouterr().out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            (directive,) = doc["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "Flywheel"
            assert doc["service"] == "flywheel-judge"
            for m in directive["Metrics"]:
                value = doc[m["Name"]]  # Powertools writes a list of the values added
                emitted[m["Name"]] = sum(value) if isinstance(value, list) else value
    return result, emitted


def the_pass(result: dict[str, Any]) -> dict[str, Any]:
    (found,) = [p for p in result["passes"] if p["model"] == MODEL]
    return found


def events(reg: Registry, version: int) -> list[tuple[str, str]]:
    return [(e["what"], e["who"]) for e in history.events(reg, version)]


def test_a_candidate_within_the_thresholds_is_promoted(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    reg, rollout = running_rollout(stack)
    # two pods, neither with a sufficient sample alone: the judge merges them (60 + 60 >= 100)
    for pod in ("api-a", "api-b"):
        publish(reg, rollout, pod, production=stats(60), candidate=stats(60))

    result, emitted = run(capsys)

    p = the_pass(result)
    assert (p["action"], p["candidate"], p["pods"]) == ("promote", 2, 2)
    assert p["reason"].startswith("all thresholds held over 120 requests")
    assert p["figures"]["error_rate_increase"] == 0 and p["figures"]["p99_ratio"] == 1
    state = stack.get_json(rollout_key(reg))
    assert (state["status"], state["decided_by"]) == ("promoted", JUDGE)
    alias = reg.alias()
    assert alias is not None and alias.version == 2
    assert (alias.doc["previous"], alias.doc["updated_by"]) == (1, JUDGE)
    assert events(reg, 2) == [("rollout-started", "trainer"), ("rollout-promoted", JUDGE)]
    assert emitted["RolloutsPromoted"] == 1
    assert emitted["RolloutsAborted"] == emitted["JudgeErrors"] == 0

    # the next scheduled run finds nothing left to do
    again, _ = run(capsys)
    assert the_pass(again)["action"] == "none"
    alias = reg.alias()
    assert alias is not None and alias.version == 2


def test_a_candidate_breaking_the_error_rate_is_aborted(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    reg, rollout = running_rollout(stack)
    publish(reg, rollout, "api-a", production=stats(200), candidate=stats(200, errors=10))  # +5 points > 1 point

    result, emitted = run(capsys)

    p = the_pass(result)
    assert (p["action"], p["candidate"], p["pods"]) == ("abort", 2, 1)
    assert "error rate 5.00% vs production 0.00%" in p["reason"]
    assert "max_error_rate_increase 1.00%" in p["reason"]
    found = load(reg)
    assert found is not None
    assert (found[0].status, found[0].decided_by) == ("aborted", JUDGE)
    alias = reg.alias()
    assert alias is not None and (alias.version, alias.doc["updated_by"]) == (1, "trainer")  # production unchanged
    assert events(reg, 2) == [("rollout-started", "trainer"), ("rollout-aborted", JUDGE)]
    assert emitted["RolloutsAborted"] == 1
    assert emitted["RolloutsPromoted"] == emitted["JudgeErrors"] == 0


def test_a_sample_too_small_waits(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    reg, rollout = running_rollout(stack)
    publish(reg, rollout, "api-a", production=stats(40), candidate=stats(40))

    result, emitted = run(capsys)

    assert the_pass(result)["action"] == "wait"
    assert the_pass(result)["reason"] == "candidate has 40 requests < min_requests 100"
    found = load(reg)
    assert found is not None and found[0].running
    assert emitted["RolloutsWaiting"] == 1


def test_a_failed_pass_is_counted_not_raised(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    reg, _ = running_rollout(stack)
    stack.put(rollout_key(reg), b"{not json")  # a state file nobody can read

    result, emitted = run(capsys)  # returns: the next scheduled run retries

    p = the_pass(result)
    assert p["action"] == "error"
    assert p["reason"].startswith("JSONDecodeError")
    assert emitted["JudgeErrors"] == 1
    alias = reg.alias()
    assert alias is not None and alias.version == 1


def live_doc(*versions: tuple[int, float, int]) -> bytes:
    """A published live-quality document: (version, live r2, labelled) against a holdout r2 of 0.9."""
    return json.dumps({"model": MODEL, "task": "regression", "metric": "r2", "window_days": 7,
                       "min_labelled": MIN_LABELLED, "tolerance": TOLERANCE, "computed_at": 1.0,
                       "versions": [{"version": v, "live": live, "holdout": 0.9, "labelled": n, "captured": n,
                                     "shortfall": 0.9 - live} for v, live, n in versions]}).encode()  # fmt: skip


def test_every_run_counts_the_models_whose_production_version_is_short_live(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = Registry(stack.s3, stack.bucket, MODEL)
    stack.put(reg.version_key(1, "manifest.json"), json.dumps({"version": 1, "status": "promoted"}).encode())
    reg.move_alias(1, None, actor="trainer", reason="first version")
    _, emitted = run(capsys)
    assert emitted["LiveQualityBelowHoldout"] == 0  # nothing published yet: 0, not missing

    stack.put(summary_key(MODEL), live_doc((1, 0.9 - TOLERANCE / 2, 5000), (2, 0.5, 5000)))
    _, emitted = run(capsys)
    assert emitted["LiveQualityBelowHoldout"] == 0  # production within tolerance; v2 short but not served

    stack.put(summary_key(MODEL), live_doc((1, 0.9 - 2 * TOLERANCE, MIN_LABELLED - 1)))
    _, emitted = run(capsys)
    assert emitted["LiveQualityBelowHoldout"] == 0  # short, but too few labels to say so

    stack.put(summary_key(MODEL), live_doc((1, 0.9 - 2 * TOLERANCE, MIN_LABELLED)))
    _, emitted = run(capsys)
    assert emitted["LiveQualityBelowHoldout"] == 1
    _, emitted = run(capsys)
    assert emitted["LiveQualityBelowHoldout"] == 1  # every run, however rarely labels arrive
