"""The models page's Rollout section against moto's S3: what viewers see, and an operator's abort."""

from __future__ import annotations

import math

import pytest

from flywheel.registry.operator_actions import rollback
from flywheel.registry.store import Registry
from flywheel.release import rollout_actions
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import Rollout, Thresholds
from flywheel.release.rollout_stats import publish
from tests.conftest import Stack
from tests.ui.conftest import Signer, open_app, texts, train

OLGA = "olga (operator, local-token)"
ROLLOUT = "models/savings/rollout.json"
STATS = VersionStats(requests=8, errors=1, latency_buckets=((0.05, 8), (math.inf, 8)), prediction_counts=(4, 4))


@pytest.fixture
def running(stack: Stack) -> Rollout:
    """savings: v1 in production, a canary rollout of v2 that a pod has reported on."""
    train(stack, seed=1)
    train(stack, seed=2, gate_tolerance=1.0)
    registry = Registry(stack.s3, stack.bucket, "savings")
    rollback(registry, actor="test")
    rollout = rollout_actions.begin(registry, 2, actor="trainer", mode="canary", share=0.25,
                                thresholds=Thresholds(min_requests=100))  # fmt: skip
    publish(registry, rollout, "pod-a", production=STATS, candidate=STATS)
    return rollout


def test_a_viewer_sees_the_rollout_but_no_buttons(running: Rollout) -> None:
    at = open_app("models")
    assert "**Canary rollout of v2 against v1: running** (share 0.25)" in texts(at, "markdown")
    assert "Started by trainer at " + running.started_at + "." in texts(at, "caption")
    figures = at.dataframe[1].value
    assert list(figures["version"]) == ["candidate v2", "production v1"]
    assert list(figures["requests"]) == [8, 8] and list(figures["error rate"]) == [0.125, 0.125]
    assert "The judge now: wait: candidate has 8 requests < min_requests 100" in texts(at, "info")
    history = at.dataframe[2].value
    assert [(e["what"], e["who"]) for e in history.to_dict("records")] == [("rollout-started", "trainer")]
    assert not [b for b in at.button if b.key in ("rollout-promote", "rollout-abort")]
    assert any("for operators" in t and "flywheel rollout abort" in t for t in texts(at, "info"))


def test_an_operators_abort_is_recorded_and_production_stays(stack: Stack, signer: Signer, running: Rollout) -> None:
    at = open_app("models", identity=signer.token("operator", "olga"))
    at.text_input(key="rollout-reason").input("error rate too high").run()
    at.button(key="rollout-abort").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"savings: rollout of v2 aborted by {OLGA}; production: v1." in texts(at, "success")
    state = stack.get_json(ROLLOUT)
    assert (state["status"], state["decided_by"], state["reason"]) == ("aborted", OLGA, "error rate too high")
    assert stack.get_json("models/savings/aliases/production.json")["version"] == 1
    assert "**Canary rollout of v2 against v1: aborted** (share 0.25)" in texts(at, "markdown")
    assert not [b for b in at.button if b.key in ("rollout-promote", "rollout-abort")], "nothing left to decide"
    history = at.dataframe[2].value
    assert [(e["what"], e["who"]) for e in history.to_dict("records")][-1] == ("rollout-aborted", OLGA)


def test_an_operators_promote_moves_production(stack: Stack, signer: Signer, running: Rollout) -> None:
    at = open_app("models", identity=signer.token("operator", "olga"))
    at.button(key="rollout-promote").click().run()
    assert f"savings: rollout of v2 promoted by {OLGA}; production: v2." in texts(at, "success")
    assert stack.get_json(ROLLOUT)["reason"] == f"promote by {OLGA} (UI)"
    assert [m.value for m in at.metric] == ["v2"], "the page shows the new production version at once"
