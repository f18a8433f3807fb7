"""version_status: one word per version from the gate's decision, the alias and the rollout (issue 23, item 7)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flywheel.registry.store import Alias
from flywheel.release.rollout_state import Rollout
from flywheel.release.version_status import STATUSES, served_before, serving_line, share_phrase, version_status

CANARY = Rollout(model="m", candidate=4, baseline=3, mode="canary", share=0.2, started_at="t", started_by="trainer")


def status(version: int, approved: bool = True, rollout: Rollout | None = CANARY, **kw: object) -> str:
    return version_status(version, approved=approved, production=3, rollout=rollout, **kw)


def test_a_running_candidate_is_its_mode_not_promoted() -> None:
    assert status(4) == "canary"
    assert status(4, rollout=replace(CANARY, mode="shadow", share=1.0)) == "shadow"
    assert status(3) == "production"
    assert status(4, rollout=replace(CANARY, status="aborted")) == "aborted"
    assert status(4, rollout=replace(CANARY, status="promoted"), served_before={4}) == "was production"


@pytest.mark.parametrize(
    ("version", "approved", "kw", "word"),
    [
        (2, True, {"served_before": {2}}, "was production"),
        (2, False, {"served_before": {2}}, "was production"),  # forced into production once
        (5, True, {}, "approved"),
        (5, False, {}, "rejected"),
        (5, True, {"aborted": True}, "aborted"),
    ],
)
def test_the_other_words(version: int, approved: bool, kw: dict[str, object], word: str) -> None:
    assert status(version, approved, **kw) == word
    assert word in STATUSES


def test_served_before_gathers_every_trace_of_production() -> None:
    alias = Alias(version=3, etag="e", doc={"version": 3, "previous": 2})
    assert served_before([None, 1, 1, 2], alias, replace(CANARY, baseline=3)) == {1, 2, 3}
    assert served_before([], None, replace(CANARY, status="promoted")) == {3, 4}
    assert served_before([], None, None) == set()


def test_the_serving_line_names_production_and_the_candidate_apart() -> None:
    assert serving_line(3, CANARY) == "serving v3 · canary v4 (20% of keys)"
    assert (
        serving_line(3, replace(CANARY, mode="shadow", share=1.0))
        == "serving v3 · shadow v4 (runs on 100% of requests)"
    )
    assert serving_line(3, replace(CANARY, status="aborted")) == "serving v3"
    assert serving_line(None, None) == "nothing in production"
    assert share_phrase({"mode": "canary", "candidate": 7, "share": 0.125}) == "canary v7 (12.5% of keys)"
