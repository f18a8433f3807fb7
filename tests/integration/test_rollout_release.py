"""The trainer hands approved versions to rollouts (FLYWHEEL_ROLLOUT_MODE or the model's policy)."""

from __future__ import annotations

import pytest

from flywheel.jobs.retrain import Outcome, retrain
from flywheel.registry.history import events
from flywheel.registry.store import Registry
from flywheel.release import rollout_actions
from flywheel.release.rollout_state import load
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes


def run(stack: Stack, seed: int, **overrides: object) -> Outcome:
    stack.put(f"data/batch-{seed}.csv", csv_bytes(800, seed=seed))
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_tolerance=1.0,
                               **overrides)  # type: ignore[arg-type]  # fmt: skip
    return retrain(settings, s3_client())


def test_first_version_direct_then_canary_then_superseded(stack: Stack) -> None:
    reg = Registry(stack.s3, stack.bucket, "savings")
    first = run(stack, 1, rollout_mode="canary", rollout_share=0.25)
    assert first.status == "promoted" and first.production_version == 1  # nothing to compare a first version with
    assert load(reg) is None

    second = run(stack, 2, rollout_mode="canary", rollout_share=0.25)
    assert second.status == "rollout" and second.production_version == 1, second
    assert "canary rollout of v2 at 0.25 against production v1" in second.reasons[-1]
    rollout, _ = load(reg) or pytest.fail("no rollout")
    assert (rollout.candidate, rollout.baseline, rollout.mode, rollout.share) == (2, 1, "canary", 0.25)
    assert reg.alias().version == 1  # type: ignore[union-attr]
    assert reg.manifest(2)["gate"]["rollout"]["mode"] == "canary"

    third = run(stack, 3, rollout_mode="canary", rollout_share=0.25)
    assert third.status == "rollout" and third.version == 3
    rollout, _ = load(reg) or pytest.fail("no rollout")
    assert rollout.candidate == 3 and rollout.running
    assert [e["what"] for e in events(reg, 2)] == ["rollout-started", "rollout-aborted"]
    assert events(reg, 2)[-1]["reason"] == "superseded by v3"


def test_the_models_policy_wins_and_direct_moves_the_alias(stack: Stack) -> None:
    reg = Registry(stack.s3, stack.bucket, "savings")
    run(stack, 1)
    rollout_actions.set_policy(reg, rollout_actions.Policy("shadow", 1.0))
    assert run(stack, 2).status == "rollout"  # the deployment says direct; the model says shadow
    found = load(reg)
    assert found is not None and found[0].mode == "shadow" and found[0].share == 1.0
    rollout_actions.abort(reg, actor="alice", reason="not now")
    rollout_actions.set_policy(reg, rollout_actions.Policy("direct"))
    out = run(stack, 3)
    assert out.status == "promoted" and reg.alias().version == 3  # type: ignore[union-attr]


def test_a_rollout_start_lost_to_a_crash_is_completed_by_the_next_run(stack: Stack) -> None:
    reg = Registry(stack.s3, stack.bucket, "savings")
    run(stack, 1)
    second = run(stack, 2, rollout_mode="shadow")
    assert second.status == "rollout"
    # as if the run died after publishing v2 and before the rollout began
    stack.s3.delete_object(Bucket=stack.bucket, Key=f"{reg.root}rollout.json")
    again = retrain(TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_tolerance=1.0,
                                    rollout_mode="shadow"), s3_client())  # fmt: skip
    assert again.status == "rollout" and again.version == 2, again
    found = load(reg)
    assert found is not None and found[0].candidate == 2 and found[0].running
    # and a further retry changes nothing: the rollout exists
    third = retrain(TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_tolerance=1.0,
                                    rollout_mode="shadow"), s3_client())  # fmt: skip
    assert third.status == "unchanged"


def test_a_refused_history_write_does_not_undo_an_operators_decision(stack: Stack) -> None:
    """In the cloud the bucket policy may refuse an operator's own role the version's history: the decision
    stands in rollout.json all the same."""
    from botocore.exceptions import ClientError

    run(stack, 1)
    run(stack, 2, rollout_mode="canary")
    s3 = s3_client()

    def refuse_history(params: dict[str, object], **_: object) -> None:
        if "/history/" in str(params.get("Key", "")):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "bucket policy"}}, "PutObject")

    s3.meta.events.register("before-parameter-build.s3.PutObject", refuse_history)
    reg = Registry(s3, stack.bucket, "savings")
    decided = rollout_actions.abort(reg, actor="alice (operator, cli)", reason="not now")
    assert decided.status == "aborted"
    found = load(reg)
    assert found is not None and found[0].status == "aborted" and found[0].history[-1].who == "alice (operator, cli)"
    assert [e["what"] for e in events(reg, 2)] == ["rollout-started"]  # the refused event is not there
