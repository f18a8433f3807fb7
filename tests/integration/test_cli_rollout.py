"""`flywheel rollout ...` and `flywheel models --history` against moto's server (in-process main())."""

from __future__ import annotations

import json
import math

import pytest

from flywheel.cli.main import main
from flywheel.jobs.retrain import retrain
from flywheel.registry.store import Registry
from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import load
from flywheel.release.rollout_stats import publish
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes

ROLLOUT = "models/savings/rollout.json"
ALIAS = "models/savings/aliases/production.json"
# a small healthy sample: 20 requests, p99 within 100 ms, the same predictions for both versions
HEALTHY = VersionStats(requests=20, latency_buckets=((0.05, 19), (0.1, 20), (math.inf, 20)), prediction_counts=(5, 5))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def reg(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """savings with v1 in production and v2 approved beside it; the operator is alice."""
    monkeypatch.setenv("USER", "alice")
    monkeypatch.delenv("FLYWHEEL_ROLLOUT_MODE", raising=False)
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_tolerance=1.0)
    for seed in (1, 2):
        stack.put(f"data/batch-{seed}.csv", csv_bytes(600, seed=seed))
        assert retrain(settings, s3_client()).status == "promoted"
    registry = Registry(stack.s3, stack.bucket, "savings")
    alias = registry.alias()
    assert alias is not None and alias.version == 2
    registry.move_alias(1, alias, actor="test", reason="v2 waits for its rollout")
    return registry


def test_start_status_then_the_judge_promotes(reg: Registry, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "rollout", "status")[1] == "savings: no rollout\n"
    code, _, err = run(capsys, "rollout", "start", "2")
    assert code == 2 and "rollout policy is direct: choose --mode shadow or --mode canary" in err

    code, out, _ = run(capsys, "rollout", "start", "2", "--mode", "canary", "--share", "0.2", "--min-requests", "10",
                       "--min-seconds", "0")  # fmt: skip
    assert code == 0 and "canary rollout of v2 against v1 started by alice, share 0.2" in out
    code, out, _ = run(capsys, "rollout", "status")
    assert "savings: canary rollout of v2 against v1, share 0.2: running" in out
    assert "the judge now: wait: candidate has 0 requests < min_requests 10" in out
    assert "pods reporting: 0" in out and "min_requests 10, min_seconds 0, max_seconds 3600" in out
    assert "rollout-started by alice: canary at 0.2 against v1" in out

    code, _, err = run(capsys, "rollout", "start", "2", "--mode", "shadow")
    assert code == 2 and "'savings' already has a running canary rollout of v2" in err

    found = load(reg)
    assert found is not None
    publish(reg, found[0], "pod-a", production=HEALTHY, candidate=HEALTHY)
    snap = json.loads(run(capsys, "rollout", "status", "--json")[1])
    assert snap["pods"] == 1 and snap["candidate"]["requests"] == 20 and snap["candidate"]["error_rate"] == 0
    assert snap["production"]["p99_ms"] == pytest.approx(90.0)  # rank 19.8 of 20: 0.8 into the 50-100 ms bucket
    assert snap["verdict"]["action"] == "promote" and snap["rollout"]["status"] == "running", "status only looks"
    assert stack.get_json(ALIAS)["version"] == 1

    code, out, _ = run(capsys, "rollout", "judge", "--model", "savings")
    assert code == 0 and out.startswith("savings: v2 promote (1 pods reporting): all thresholds held")
    assert stack.get_json(ALIAS)["version"] == 2
    state = stack.get_json(ROLLOUT)
    assert (state["status"], state["decided_by"]) == ("promoted", "judge")
    code, out, _ = run(capsys, "models", "--history", "2")
    assert [line.split()[1:4] for line in out.splitlines()[1:]] == [
        ["rollout-started", "by", "alice:"],
        ["rollout-promoted", "by", "judge:"],
    ]
    assert json.loads(run(capsys, "rollout", "judge", "--json")[1]) == [
        {"model": "savings", "candidate": 2, "action": "none", "reason": "", "pods": 0, "figures": {}, "mlflow": ""}
    ]


def test_an_operator_abort_records_who_and_why(reg: Registry, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "rollout", "start", "2", "--mode", "shadow", "--share", "1")[0] == 0
    code, out, _ = run(capsys, "rollout", "abort", "--reason", "latency spike in eu", "--candidate", "2")
    assert code == 0 and out == "savings: rollout of v2 aborted by alice: latency spike in eu\n  production: v1\n"
    state = stack.get_json(ROLLOUT)
    assert (state["status"], state["decided_by"], state["reason"]) == ("aborted", "alice", "latency spike in eu")
    assert stack.get_json(ALIAS)["version"] == 1, "an abort leaves production where it was"
    events = json.loads(run(capsys, "models", "--history", "2", "--json")[1])
    assert [(e["what"], e["who"], e["reason"]) for e in events][-1] == ("rollout-aborted", "alice",
                                                                        "latency spike in eu")  # fmt: skip
    code, out, _ = run(capsys, "rollout", "status")
    assert "shadow rollout of v2 against v1, share 1: aborted" in out and "the judge now" not in out
    assert "aborted by alice at" in out and out.rstrip().endswith("rollout-aborted by alice: latency spike in eu")

    code, _, err = run(capsys, "rollout", "abort")
    assert code == 2 and "has no running rollout" in err
    code, _, err = run(capsys, "rollout", "promote")
    assert code == 2 and "has no running rollout" in err
    # a finished rollout is replaced by the next; --candidate guards against deciding on another one
    assert run(capsys, "rollout", "start", "2", "--mode", "canary")[0] == 0
    code, _, err = run(capsys, "rollout", "promote", "--candidate", "3")
    assert code == 2 and "is of v2, not v3" in err
    code, out, _ = run(capsys, "rollout", "promote", "--json")
    decided = json.loads(out)
    assert (decided["status"], decided["decided_by"], decided["production"]) == ("promoted", "alice", 2)
    assert decided["reason"] == "promote by operator alice (flywheel rollout promote)"
    assert stack.get_json(ALIAS)["updated_by"] == "alice"


def test_policy_show_set_and_used_by_start(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rollout", "policy")
    assert code == 0 and out.startswith("savings: direct (the deployment's default")
    code, out, _ = run(capsys, "rollout", "policy", "--mode", "shadow", "--share", "0.5", "--min-requests", "50")
    assert code == 0 and out.startswith("savings: set: shadow at 0.5 (the model's own)")
    shown = json.loads(run(capsys, "rollout", "policy", "--json")[1])
    assert (shown["source"], shown["mode"], shown["share"]) == ("model", "shadow", 0.5)
    assert shown["thresholds"]["min_requests"] == 50 and shown["thresholds"]["min_seconds"] == 300

    code, _, err = run(capsys, "rollout", "policy", "--share", "2")
    assert code == 2 and "share must be within (0, 1], not 2" in err
    code, _, err = run(capsys, "rollout", "start", "2", "--min-seconds", "9999")
    assert code == 2 and "invalid thresholds: need 0 <= min_seconds <= max_seconds" in err

    started = json.loads(run(capsys, "rollout", "start", "2", "--json")[1])
    assert (started["mode"], started["share"], started["thresholds"]["min_requests"]) == ("shadow", 0.5, 50)
    assert started["started_by"] == "alice"


def test_the_deployment_default_and_a_rejected_version(
    reg: Registry, stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put("data/batch-3.csv", csv_bytes(600, seed=3))
    rejected = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, gate_min_score=0.9999)
    assert retrain(rejected, s3_client()).status == "rejected"
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_MODE", "canary")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_SHARE", "0.3")
    code, _, err = run(capsys, "rollout", "start", "3")
    assert code == 2 and "v3 was rejected by the gate; pass --force" in err
    code, out, _ = run(capsys, "rollout", "start", "3", "--force")
    assert code == 0 and "canary rollout of v3 against v1 started by alice, share 0.3" in out
