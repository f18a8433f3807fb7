"""The trainer Lambda end to end on moto's server: real S3 writes, real S3 -> SQS notifications."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from flywheel.errors import LockBusy
from flywheel.jobs.retrain import retrain
from flywheel.registry.operator_actions import promote, rollback
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from lambdas.trainer import handler as trainer
from tests.conftest import Stack
from tests.helpers import FakeLambdaContext, csv_bytes
from tests.integration.trainer_helpers import MODELS, alias_version, fresh_handler, invoke, manifest


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_CV_FOLDS="2")  # both estimators still compete; half the fitting


def test_first_batch_promotes_version_1(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.put("data/batch-001.csv", csv_bytes(1500, seed=1))
    assert invoke(stack) == {"batchItemFailures": []}
    assert alias_version(stack) == 1
    m = manifest(stack, 1)
    assert m["status"] == "promoted"
    assert m["metrics"]["candidate"]["r2"] > m["metrics"]["baseline"]["r2"]
    assert m["metrics"]["production"] is None
    assert m["data"]["batches"][0]["key"] == "data/batch-001.csv"
    assert m["data"]["batches"][0]["version_id"]
    assert m["data"]["rows"] == 1500 and m["data"]["holdout_rows"] + m["data"]["train_rows"] == 1500
    assert set(m["libraries"]) >= {"python", "scikit-learn", "numpy", "joblib"}
    assert len(m["golden"]["inputs"]) == len(m["golden"]["outputs"]["predictions"]) == 8
    assert set(m["feature_stats"]) == {"income", "expenses", "age", "dependents", "debt", "credit_score",
                                       "tenure_years", "region"}  # fmt: skip
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    names = {d["Name"] for e in emf for d in e["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"BatchRows", "TrainingDuration", "Promoted", "Rejected", "HoldoutScore"} <= names
    assert any(e.get("Promoted") == 1.0 or e.get("Promoted") == [1.0] for e in emf)


def test_drifted_batch_publishes_a_new_version(stack: Stack) -> None:
    stack.put("data/batch-001.csv", csv_bytes(1500, seed=1))
    invoke(stack)
    stack.put("data/batch-002.csv", csv_bytes(1500, seed=2, drift=1.0))
    assert invoke(stack) == {"batchItemFailures": []}
    m = manifest(stack, 2)
    assert m["status"] == "promoted", m["gate"]["reasons"]
    assert m["gate"]["production_version"] == 1
    assert m["metrics"]["production"] is not None
    assert [b["key"] for b in m["data"]["batches"]] == ["data/batch-001.csv", "data/batch-002.csv"]
    assert alias_version(stack) == 2


BAD_BATCHES = {
    "not-a-csv": (b"\x89PNG\r\n\x1a\n\x00\x00binary", "format"),
    "empty": (b"", "empty"),
    "missing-column": (csv_bytes(50, seed=3).replace(b"income,", b"", 1), "header"),
    "wrong-type": (
        csv_bytes(50, seed=3).replace(b"north", b"north", 1).replace(b",43,", b",forty-three,", 1),
        "type",
    ),
    "out-of-range": (csv_bytes(50, seed=3) + b"5000,2000,150,1,100,700,2.0,north,100\n", "range"),
    "bad-category": (csv_bytes(50, seed=3).replace(b"north", b"atlantis", 1), "category"),
    "null": (csv_bytes(50, seed=3) + b"5000,2000,40,1,100,700,2.0,,100\n", "null"),
    "duplicates": (csv_bytes(50, seed=3) + csv_bytes(50, seed=3).split(b"\n", 1)[1], "duplicates"),
    "ragged": (csv_bytes(50, seed=3) + b"1,2,3,4,5,6,7,north,9,10,11\n", "format"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BATCHES))
def test_bad_batch_is_quarantined_and_alias_unchanged(stack: Stack, kind: str) -> None:
    stack.put("data/good.csv", csv_bytes(800, seed=1))
    invoke(stack)
    assert alias_version(stack) == 1
    body, check = BAD_BATCHES[kind]
    if kind == "wrong-type":
        assert b"forty-three" in body
    stack.put(f"data/{kind}.csv", body)
    assert invoke(stack) == {"batchItemFailures": []}
    assert f"data/{kind}.csv" not in stack.keys("data/")
    assert f"quarantine/{kind}.csv" in stack.keys("quarantine/")
    report = stack.get_json(f"quarantine/{kind}.csv.error.json")
    assert report["file"] == f"data/{kind}.csv"
    assert check in {p["check"] for p in report["problems"]}, report
    assert alias_version(stack) == 1
    # nothing is lost: the bytes are in quarantine/ and still a noncurrent version under data/
    assert stack.s3.get_object(Bucket=stack.bucket, Key=f"quarantine/{kind}.csv")["Body"].read() == body
    versions = stack.s3.list_object_versions(Bucket=stack.bucket, Prefix=f"data/{kind}.csv")
    assert versions.get("Versions"), "the original upload should survive as a noncurrent version"


def test_quarantine_report_names_rows_and_columns(stack: Stack) -> None:
    body = csv_bytes(30, seed=4).replace(b"north", b"atlantis", 1)
    stack.put("data/typo.csv", body)
    invoke(stack)
    problems = stack.get_json("quarantine/typo.csv.error.json")["problems"]
    cat = next(p for p in problems if p["check"] == "category")
    assert cat["column"] == "region" and cat["count"] == 1
    line = body.decode().splitlines()[cat["lines"][0] - 1]
    assert "atlantis" in line


def test_oversize_batch_is_quarantined(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_MAX_BATCH_BYTES", "1000")
    stack.put("data/big.csv", csv_bytes(200, seed=1))
    invoke(stack)
    assert "size" in {p["check"] for p in stack.get_json("quarantine/big.csv.error.json")["problems"]}


def test_worse_candidate_is_recorded_rejected_and_alias_stays(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.put("data/batch-001.csv", csv_bytes(2000, seed=1))
    invoke(stack)
    assert manifest(stack, 1)["estimator"] == "hgb"
    # an operator narrows the candidates to a linear model, which cannot fit the savings process as well
    monkeypatch.setenv("FLYWHEEL_ESTIMATORS", "linear")
    trainer._settings.cache_clear()
    stack.put("data/batch-002.csv", csv_bytes(500, seed=2))
    assert invoke(stack) == {"batchItemFailures": []}
    m = manifest(stack, 2)
    assert m["status"] == "rejected"
    assert any("production" in r and r.startswith("failed") for r in m["gate"]["reasons"]), m["gate"]
    assert m["metrics"]["candidate"]["r2"] < m["metrics"]["production"]["r2"] - 0.01
    assert alias_version(stack) == 1


def test_same_data_twice_publishes_nothing(stack: Stack) -> None:
    body = csv_bytes(800, seed=1)
    stack.put("data/a.csv", body)
    invoke(stack)
    stack.put("data/a.csv", body)  # the same bytes again (a retry, a double upload)
    stack.put("data/a-copy.csv", body)  # or under another name
    assert invoke(stack) == {"batchItemFailures": []}
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert registry.versions() == [1]
    outcome = retrain(TrainerSettings(), s3_client())
    assert outcome.status == "unchanged" and outcome.version == 1


def test_many_records_retrain_once(stack: Stack) -> None:
    for i in range(3):
        stack.put(f"data/part-{i}.csv", csv_bytes(400, seed=10 + i))
    records = stack.receive()
    assert len(records) == 4  # three uploads and moto's s3:TestEvent for the new notification config
    assert trainer.handler({"Records": records}, FakeLambdaContext()) == {"batchItemFailures": []}
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert registry.versions() == [1]
    assert len(registry.manifest(1)["data"]["batches"]) == 3


def test_test_event_only_does_nothing(stack: Stack) -> None:
    records = stack.receive()
    assert [json.loads(r["body"]).get("Event") for r in records] == ["s3:TestEvent"]
    assert trainer.handler({"Records": records}, FakeLambdaContext()) == {"batchItemFailures": []}
    assert stack.keys(MODELS) == []


def test_direct_s3_event_and_url_encoded_keys(stack: Stack) -> None:
    stack.put("data/my batch+1.csv", csv_bytes(600, seed=1))
    stack.receive()
    s3 = {"bucket": {"name": stack.bucket}, "object": {"key": "data/my+batch%2B1.csv"}}
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": s3}]}
    assert trainer.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert manifest(stack, 1)["data"]["batches"][0]["key"] == "data/my batch+1.csv"


def test_unreadable_message_is_reported_as_failure(stack: Stack) -> None:
    event = {"Records": [{"messageId": "m-1", "body": "not json", "eventSource": "aws:sqs"}]}
    assert trainer.handler(event, FakeLambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_lock_held_fails_the_messages_for_retry(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(500, seed=1))
    records = stack.receive()
    registry = Registry(s3_client(), stack.bucket, "savings")
    with registry.lock("someone-else", ttl_seconds=600):
        result = trainer.handler({"Records": records}, FakeLambdaContext())
    data_ids = [r["messageId"] for r in records if "Records" in json.loads(r["body"])]
    assert result == {"batchItemFailures": [{"itemIdentifier": i} for i in data_ids]}
    assert registry.versions() == []


def test_two_trainers_at_once_one_wins(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(3000, seed=1))
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(retrain(TrainerSettings(), s3_client()))
        except LockBusy as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [r for r in results if not isinstance(r, LockBusy)]
    assert len(wins) == 1 and wins[0].status == "promoted"
    assert sum(isinstance(r, LockBusy) for r in results) == 1
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert registry.versions() == [1] and alias_version(stack) == 1
    assert "models/savings/lock.json" not in stack.keys(MODELS)  # released


def test_expired_lock_is_taken_over(stack: Stack) -> None:
    registry = Registry(s3_client(), stack.bucket, "savings")
    stack.put("models/savings/lock.json", json.dumps({"owner": "dead", "expires_at": 0}).encode())
    with registry.lock("me", ttl_seconds=60) as token:
        assert stack.get_json("models/savings/lock.json")["owner"] == token


def test_rollback_and_promote(stack: Stack) -> None:
    stack.put("data/batch-001.csv", csv_bytes(1500, seed=1))
    invoke(stack)
    stack.put("data/batch-002.csv", csv_bytes(1500, seed=2, drift=1.0))
    invoke(stack)
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert alias_version(stack) == 2
    moved = rollback(registry, actor="test")
    assert moved.version == 1 and alias_version(stack) == 1
    assert stack.get_json(MODELS + "aliases/production.json")["previous"] == 2
    assert promote(registry, 2, actor="test").version == 2
    assert alias_version(stack) == 2
