"""`flywheel models` names where each version stands (flywheel/release/version_status.py): a rollout's candidate is
`canary` or `shadow`, never `promoted`, until it is production (issue 23, item 7). The trainer starts the rollouts,
as in a deployment whose policy is canary; moto's server holds the bucket."""

from __future__ import annotations

import json

import pytest

from flywheel.cli.main import main
from flywheel.jobs.retrain import retrain
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def statuses(capsys: pytest.CaptureFixture[str]) -> dict[int, str]:
    rows = json.loads(run(capsys, "models", "--model", "savings", "--json"))
    return {r["version"]: r["status"] for r in rows}


def row(out: str, version: int) -> str:
    """The table line of `version` in `flywheel models` output, without the production mark."""
    return next(line[2:] for line in out.splitlines() if line[2:].split()[:1] == [str(version)])


def train(stack: Stack, seed: int, mode: str = "direct") -> str:
    stack.put(f"data/batch-{seed}.csv", csv_bytes(600, seed=seed))
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_tolerance=1.0,
                               rollout_mode=mode, rollout_share=0.2)  # fmt: skip
    return retrain(settings, s3_client()).status


def test_a_canary_candidate_is_canary_until_promoted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USER", "alice")
    assert train(stack, 1) == "promoted"
    assert train(stack, 2, mode="canary") == "rollout"

    out = run(capsys, "models", "--model", "savings")
    assert "savings (regression, schema 'savings'): serving v1 · canary v2 (20% of keys)" in out
    assert row(out, 2).split()[:2] == ["2", "canary"] and "promoted" not in row(out, 2)
    assert row(out, 1).split()[:2] == ["1", "production"]
    rows = json.loads(run(capsys, "models", "--model", "savings", "--json"))
    assert [(r["status"], r["gate"], r["production"]) for r in rows] == [
        ("production", "approved", True),
        ("canary", "approved", False),
    ]

    # a newer approved version supersedes the running rollout: v2 is aborted, v3 the candidate
    assert train(stack, 3, mode="canary") == "rollout"
    assert statuses(capsys) == {1: "production", 2: "aborted", 3: "canary"}

    run(capsys, "rollout", "promote", "--model", "savings", "--candidate", "3")
    assert statuses(capsys) == {1: "was production", 2: "aborted", 3: "production"}
    out = run(capsys, "models", "--model", "savings")
    assert "savings (regression, schema 'savings'): serving v3\n" in out
    assert row(out, 1).split()[:3] == ["1", "was", "production"]


def test_shadow_and_a_rejected_version(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(stack, 1) == "promoted"
    assert train(stack, 2, mode="shadow") == "rollout"
    out = run(capsys, "models")
    assert "serving v1 · shadow v2 (runs on 20% of requests)" in out
    stack.put("data/batch-3.csv", csv_bytes(600, seed=3))
    strict = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_min_score=0.9999)
    assert retrain(strict, s3_client()).status == "rejected"
    assert statuses(capsys) == {1: "production", 2: "shadow", 3: "rejected"}
