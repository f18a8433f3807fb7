"""The published live quality (flywheel/feedback/quality_summary.py): exact figures from a report, the alert's edges
(tolerance, minimum labels), the conditional GET the replicas poll with, and the alert rule's thresholds being the
module's constants."""

from __future__ import annotations

import time
from typing import Any

import pytest

from flywheel.errors import ConflictError
from flywheel.feedback import quality_summary as qs
from flywheel.schema import load_schema
from tests.conftest import Stack
from tests.monitoring.promql import alert_rules

SAVINGS = load_schema("savings")


def report(*versions: dict[str, Any], metric: str = "r2") -> dict[str, Any]:
    return {"model": "savings", "task": "regression", "primary_metric": metric, "versions": list(versions)}


def version(n: int, live: float | None, holdout: float | None, labelled: int, *, holdout_metric: str | None = "r2",
            captured: int = 500) -> dict[str, Any]:  # fmt: skip
    return {"version": n, "captured": captured, "holdout": {"metric": holdout_metric, "score": holdout},
            "live": {"n": labelled, "r2": live, "mae": 12.5}, "days": []}  # fmt: skip


def test_summarize_gives_the_exact_figures_per_version() -> None:
    doc = qs.summarize(
        report(
            version(3, 0.75, 0.875, 250),
            version(2, None, 0.8, 1, captured=40),  # one label: no r2 yet
            version(1, 0.5, 0.5, 120, holdout_metric="mae"),  # gated on another metric: nothing to compare with
            version(4, 0.9, None, 130, holdout_metric=None),  # no manifest
        ),
        now=1_700_000_000.0,
    )
    assert doc == {
        "model": "savings",
        "task": "regression",
        "metric": "r2",
        "window_days": 7,
        "min_labelled": 100,
        "tolerance": 0.05,
        "computed_at": 1_700_000_000.0,
        "versions": [
            {"version": 3, "live": 0.75, "holdout": 0.875, "labelled": 250, "captured": 500, "shortfall": 0.125},
            {"version": 2, "live": None, "holdout": 0.8, "labelled": 1, "captured": 40, "shortfall": None},
            {"version": 1, "live": 0.5, "holdout": None, "labelled": 120, "captured": 500, "shortfall": None},
            {"version": 4, "live": 0.9, "holdout": None, "labelled": 130, "captured": 500, "shortfall": None},
        ],
    }
    assert qs.summarize(report(), window_days=3, now=1.0)["window_days"] == 3


def test_a_live_figure_above_the_holdout_score_has_a_negative_shortfall() -> None:
    (v,) = qs.summarize(report(version(1, 0.875, 0.75, 300)), now=0)["versions"]
    assert v["shortfall"] == -0.125
    assert qs.below_holdout(qs.summarize(report(version(1, 0.875, 0.75, 300)), now=0)) == []


@pytest.mark.parametrize(
    ("shortfall", "labelled", "alerts"),
    [
        (0.0625, 100, True),  # beyond the tolerance with exactly the minimum of labels
        (0.0625, 99, False),  # one label short of the minimum
        (0.05, 5000, False),  # exactly the tolerance is not beyond it
        (0.046875, 5000, False),  # within it
        (0.5, 0, False),
    ],
)
def test_below_holdout_needs_a_shortfall_beyond_the_tolerance_and_enough_labels(
    shortfall: float, labelled: int, alerts: bool
) -> None:
    doc = {"min_labelled": qs.MIN_LABELLED, "tolerance": qs.TOLERANCE, "versions": [
        {"version": 7, "live": 0.8 - shortfall, "holdout": 0.8, "labelled": labelled, "shortfall": shortfall},
        {"version": 6, "live": None, "holdout": 0.8, "labelled": 500, "shortfall": None},
    ]}  # fmt: skip
    assert [v["version"] for v in qs.below_holdout(doc)] == ([7] if alerts else [])


def test_below_holdout_reads_the_documents_own_thresholds() -> None:
    v = {"version": 1, "live": 0.7, "holdout": 0.8, "labelled": 20, "shortfall": 0.1}
    assert qs.below_holdout({"min_labelled": 10, "tolerance": 0.2, "versions": [v]}) == []
    assert qs.below_holdout({"min_labelled": 10, "tolerance": 0.05, "versions": [v]}) == [v]


def test_load_is_a_conditional_get(stack: Stack) -> None:
    assert qs.load(stack.s3, stack.bucket, "savings") == (None, None, False)  # nothing published, nothing known
    doc = qs.summarize(report(version(1, 0.75, 0.875, 250)), now=1.0)
    key = qs.publish(stack.s3, stack.bucket, doc)
    assert key == "models/savings/live-quality.json"
    got, etag, changed = qs.load(stack.s3, stack.bucket, "savings")
    assert (got, changed) == (doc, True) and etag
    assert qs.load(stack.s3, stack.bucket, "savings", etag=etag) == (None, etag, False)  # a 304
    qs.publish(stack.s3, stack.bucket, {**doc, "computed_at": 2.0})
    got, new_etag, changed = qs.load(stack.s3, stack.bucket, "savings", etag=etag)
    assert changed and new_etag != etag and got is not None and got["computed_at"] == 2.0
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    assert qs.load(stack.s3, stack.bucket, "savings", etag=new_etag) == (None, None, True)  # gone: a change
    other = qs.publish(stack.s3, stack.bucket, {**doc, "model": "churn"}, models_prefix="registry/")
    assert other == "registry/churn/live-quality.json"
    assert qs.load(stack.s3, stack.bucket, "churn", models_prefix="registry/")[0] == {**doc, "model": "churn"}


def test_the_alert_rule_uses_the_documented_tolerance_and_minimum_of_labels() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "FlywheelLiveQualityBelowHoldout"]
    expr = " ".join(rule["expr"].split())
    assert f") > {qs.TOLERANCE}" in expr
    assert f'(flywheel_live_quality_labelled{{job="flywheel-api"}}) >= {qs.MIN_LABELLED}' in expr
    assert rule["for"] == "2h"


def test_publish_over_never_replaces_figures_published_in_between(stack: Stack) -> None:
    doc = qs.summarize(report(version(1, 0.75, 0.875, 250)), now=1.0)
    assert qs.publish_over(stack.s3, stack.bucket, doc, None)  # nothing there: created
    assert not qs.publish_over(stack.s3, stack.bucket, {**doc, "computed_at": 2.0}, None)  # create-only lost
    _, etag, _ = qs.load(stack.s3, stack.bucket, "savings")
    qs.publish(stack.s3, stack.bucket, {**doc, "computed_at": 3.0})  # another trainer, in between
    assert not qs.publish_over(stack.s3, stack.bucket, {**doc, "computed_at": 4.0}, etag)
    got, now_etag, _ = qs.load(stack.s3, stack.bucket, "savings")
    assert got is not None and got["computed_at"] == 3.0
    assert qs.publish_over(stack.s3, stack.bucket, {**doc, "computed_at": 5.0}, now_etag)
    got, _, _ = qs.load(stack.s3, stack.bucket, "savings")
    assert got is not None and got["computed_at"] == 5.0


def test_refresh_keeps_a_newer_winners_figures_and_gives_up_loudly(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another trainer publishes while this one computes: figures it began computing later include every label
    this call saw, so they stay; older ones are recomputed over, and a run of lost races raises."""
    mine = qs.summarize(report(version(1, 0.75, 0.875, 250)), now=1.0)
    rival: dict[str, Any] = {}

    def compute(*args: Any, **kwargs: Any) -> dict[str, Any]:
        rival["writes"] = rival.get("writes", 0) + 1  # each write its own bytes (and ETag)
        qs.publish(stack.s3, stack.bucket, rival)  # the other trainer's write lands during this join
        return dict(mine)

    monkeypatch.setattr(qs, "compute", compute)
    rival.update({**mine, "computed_at": time.time() + 1, "versions": []})
    got = qs.refresh(stack.s3, stack.bucket, "savings", SAVINGS)
    assert got == rival and qs.load(stack.s3, stack.bucket, "savings")[0] == rival

    rival.update({"computed_at": 0.0})  # an older join keeps winning
    with pytest.raises(ConflictError):
        qs.refresh(stack.s3, stack.bucket, "savings", SAVINGS, attempts=2)
