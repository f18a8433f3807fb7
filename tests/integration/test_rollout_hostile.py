"""The judge against what it cannot trust or must not undo: hostile statistics objects, a rollback after a
promotion, a rollout replaced while it was being judged."""

from __future__ import annotations

import json
import math
import time

import pytest

from flywheel.errors import ConflictError
from flywheel.jobs.judge_pass import judge_model
from flywheel.registry import operator_actions
from flywheel.release import rollout_actions
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import load
from flywheel.release.rollout_stats import gather, publish, stats_prefix
from tests.conftest import Stack
from tests.integration.rollout_models import QUICK, running


def stats(requests: int, errors: int = 0) -> VersionStats:
    buckets = ((0.1, round(requests * 0.99)), (0.2, requests), (math.inf, requests))
    return VersionStats(requests, errors, buckets, (requests // 4,) * 4)


HOSTILE = {
    "negative errors": {"requests": 200, "errors": -100000},
    "more errors than requests": {"requests": 10, "errors": 11},
    "infinite requests": "Infinity",
    "decreasing buckets": {"requests": 200, "latency_buckets": [[0.1, 150], [0.2, 100], ["+Inf", 200]]},
    "a list, not an object": [],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_an_impossible_statistics_object_is_skipped_not_believed(stack: Stack, kind: str) -> None:
    reg, rollout = running(stack)
    publish(reg, rollout, "honest", stats(150), stats(150, errors=30))  # 20% errors: abort on its own
    prefix = stats_prefix(reg, rollout)
    hostile = HOSTILE[kind]
    body = (
        '{"candidate": {"requests": Infinity}, "production": {}}'
        if hostile == "Infinity"
        else json.dumps({"candidate": hostile, "production": stats(150).to_dict()})
    )
    stack.put(prefix + "evil.json", body.encode())
    stack.put(prefix + "huge.json", b'{"candidate": {}, "production": {}, "pad": "' + b"x" * 70_000 + b'"}')
    cand, _, pods = gather(reg, rollout)
    assert pods == 1 and cand.errors == 30  # only the honest pod counted
    assert judge_model(reg).action == "abort"


def test_pods_with_other_histograms_are_left_out_not_fatal(stack: Stack) -> None:
    reg, rollout = running(stack)
    publish(reg, rollout, "a", stats(80), stats(80))
    publish(reg, rollout, "b", stats(80), stats(80))
    odd = VersionStats(80, 0, ((0.5, 80), (math.inf, 80)), (20, 20, 20, 20))  # an older image's buckets
    publish(reg, rollout, "old", odd, odd)
    _, _, pods = gather(reg, rollout)
    assert pods == 2
    assert judge_model(reg).action == "promote"


def test_the_judge_never_undoes_a_rollback_made_after_its_promotion(stack: Stack) -> None:
    reg, rollout = running(stack)
    publish(reg, rollout, "a", stats(200), stats(200))
    assert judge_model(reg).action == "promote"
    assert reg.alias().version == 2  # type: ignore[union-attr]
    time.sleep(1.1)  # the rollback is recorded in a later second than the decision
    operator_actions.rollback(reg, actor="alice")
    assert reg.alias().version == 1  # type: ignore[union-attr]
    again = judge_model(reg)
    assert again.action == "none", again
    assert reg.alias().version == 1  # type: ignore[union-attr]  # the rollback stands


def test_a_rollout_replaced_while_judged_is_not_decided_on_old_figures(stack: Stack) -> None:
    reg, first = running(stack)
    _, etag = load(reg) or pytest.fail("no rollout")
    rollout_actions.abort(reg, actor="alice", reason="change the share")
    second = rollout_actions.begin(reg, 2, actor="alice", mode="canary", share=0.2, thresholds=QUICK)
    assert second.id != first.id and stats_prefix(reg, second) != stats_prefix(reg, first)
    with pytest.raises(ConflictError, match="changed since it was judged"):
        rollout_actions.promote(reg, actor="judge", reason="figures of the first", expected_etag=etag)
    found = load(reg)
    assert found is not None and found[0].running and found[0].id == second.id
