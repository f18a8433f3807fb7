"""models/<model>/rollout.json on moto's server: created and changed only by compare-and-swap."""

from __future__ import annotations

import json
import threading

import pytest

from flywheel.errors import ConflictError, NotFound
from flywheel.registry.store import Registry
from flywheel.release import rollout_state as module
from flywheel.release.rollout_state import (
    HISTORY_LIMIT,
    Event,
    Rollout,
    Thresholds,
    decide,
    load,
    rollout_key,
    start,
)
from tests.conftest import Stack

MODEL = "houses"


def registry(stack: Stack, versions: tuple[int, ...] = (1, 2, 3)) -> Registry:
    reg = Registry(stack.s3, stack.bucket, MODEL)
    for v in versions:
        stack.put(reg.version_key(v, "manifest.json"), json.dumps({"version": v, "status": "promoted"}).encode())
    return reg


def loaded(reg: Registry) -> tuple[Rollout, str]:
    found = load(reg)
    assert found is not None, "no rollout stored"
    return found


def test_load_returns_none_when_absent(stack: Stack) -> None:
    assert load(registry(stack)) is None


def test_start_writes_the_state_beside_the_alias(stack: Stack) -> None:
    reg = registry(stack)
    rollout, etag = start(reg, candidate=2, baseline=1, mode="canary", share=0.2, actor="trainer",
                          thresholds=Thresholds(min_requests=50))  # fmt: skip
    assert rollout_key(reg) == f"models/{MODEL}/rollout.json"
    assert stack.get_json(rollout_key(reg))["candidate"] == 2
    stored, stored_etag = loaded(reg)
    assert stored == rollout and stored_etag == etag
    assert stored.running and stored.thresholds.min_requests == 50 and stored.thresholds.max_psi == 0.25
    assert [(e.what, e.who) for e in stored.history] == [("started", "trainer")]


def test_start_refuses_a_second_running_rollout(stack: Stack) -> None:
    reg = registry(stack)
    start(reg, candidate=2, baseline=1, mode="shadow", share=1.0, actor="trainer")
    with pytest.raises(ConflictError, match=r"'houses' already has a running shadow rollout of v2") as e:
        start(reg, candidate=3, baseline=1, mode="canary", share=0.1, actor="alice")
    assert e.value.detail == {"model": MODEL, "candidate": 2}
    assert loaded(reg)[0].candidate == 2


def test_start_checks_the_candidate_and_arguments(stack: Stack) -> None:
    reg = registry(stack)
    with pytest.raises(NotFound):
        start(reg, candidate=9, baseline=1, mode="canary", share=0.1, actor="trainer")
    with pytest.raises(ValueError, match="share"):
        start(reg, candidate=2, baseline=1, mode="canary", share=0, actor="trainer")
    with pytest.raises(ValueError, match="mode"):
        start(reg, candidate=2, baseline=1, mode="direct", share=0.1, actor="trainer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline"):
        start(reg, candidate=1, baseline=1, mode="canary", share=0.1, actor="trainer")
    assert load(reg) is None


def test_concurrent_decisions_one_wins(stack: Stack) -> None:
    reg = registry(stack)
    start(reg, candidate=2, baseline=1, mode="canary", share=0.1, actor="trainer")
    read = loaded(reg)
    decided, _ = decide(reg, *read, status="promoted", actor="judge", reason="all thresholds held")
    with pytest.raises(ConflictError, match=r"rollout of model 'houses' changed meanwhile") as e:
        decide(reg, *read, status="aborted", actor="alice", reason="operator abort")
    assert e.value.detail == {"model": MODEL}
    stored, _ = loaded(reg)
    assert stored == decided and stored.status == "promoted" and stored.decided_by == "judge"
    assert [(h.what, h.who) for h in stored.history] == [("started", "trainer"), ("promoted", "judge")]
    assert stored.history[-1].reason == "all thresholds held"


def test_racing_threads_one_wins(stack: Stack) -> None:
    reg = registry(stack)
    start(reg, candidate=2, baseline=1, mode="canary", share=0.1, actor="trainer")
    read = loaded(reg)
    barrier, outcomes = threading.Barrier(2), []

    def writer(status: str, actor: str) -> None:
        barrier.wait()
        try:
            decide(reg, *read, status=status, actor=actor, reason=actor)  # type: ignore[arg-type]
            outcomes.append(("won", actor))
        except ConflictError:
            outcomes.append(("lost", actor))

    threads = [threading.Thread(target=writer, args=a) for a in (("promoted", "judge"), ("aborted", "alice"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o for o, _ in outcomes) == ["lost", "won"]
    winner = next(a for o, a in outcomes if o == "won")
    assert loaded(reg)[0].decided_by == winner


def test_a_finished_rollout_cannot_be_decided_again_but_a_new_one_starts(stack: Stack) -> None:
    reg = registry(stack)
    start(reg, candidate=2, baseline=1, mode="canary", share=0.1, actor="trainer")
    aborted, etag = decide(reg, *loaded(reg), status="aborted", actor="judge", reason="p99")
    with pytest.raises(ConflictError, match="already aborted by judge: p99"):
        decide(reg, aborted, etag, status="promoted", actor="alice", reason="")
    with pytest.raises(ValueError, match="promoted or aborted"):
        decide(reg, aborted, etag, status="running", actor="alice", reason="")
    again, _ = start(reg, candidate=3, baseline=1, mode="shadow", share=0.5, actor="alice")
    assert loaded(reg)[0] == again and again.running


def test_concurrent_starts_one_wins(stack: Stack) -> None:
    reg = registry(stack)
    barrier, outcomes = threading.Barrier(2), []

    def starter(candidate: int) -> None:
        barrier.wait()
        try:
            start(reg, candidate=candidate, baseline=1, mode="canary", share=0.1, actor=f"op{candidate}")
            outcomes.append(("won", candidate))
        except ConflictError:
            outcomes.append(("lost", candidate))

    threads = [threading.Thread(target=starter, args=(c,)) for c in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o for o, _ in outcomes) == ["lost", "won"]
    winner = next(c for o, c in outcomes if o == "won")
    assert loaded(reg)[0].candidate == winner


def test_history_is_bounded(stack: Stack) -> None:
    reg = registry(stack)
    notes = tuple(Event("note", f"w{i}", "t") for i in range(HISTORY_LIMIT))
    rollout = Rollout(
        model=MODEL, candidate=2, baseline=1, mode="canary", share=0.1, started_at="t", started_by="x", history=notes
    )
    etag = module._write(reg, rollout, None)
    decided, _ = decide(reg, rollout, etag, status="aborted", actor="alice", reason="enough")
    assert len(decided.history) == HISTORY_LIMIT and decided.history[-1].what == "aborted"
    assert decided.history[0].who == "w1"


def test_defaults_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from flywheel.settings import TrainerSettings

    monkeypatch.delenv("FLYWHEEL_ROLLOUT_MODE", raising=False)
    monkeypatch.delenv("FLYWHEEL_ROLLOUT_SHARE", raising=False)
    s = TrainerSettings(bucket="bkt")
    assert (s.rollout_mode, s.rollout_share) == ("direct", 0.1)
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_MODE", "canary")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_SHARE", "0.25")
    s = TrainerSettings(bucket="bkt")
    assert (s.rollout_mode, s.rollout_share) == ("canary", 0.25)
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_MODE", "blue")
    with pytest.raises(ValidationError, match="rollout_mode"):
        TrainerSettings(bucket="bkt")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_MODE", "shadow")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_SHARE", "1.5")
    with pytest.raises(ValidationError, match="rollout_share"):
        TrainerSettings(bucket="bkt")
