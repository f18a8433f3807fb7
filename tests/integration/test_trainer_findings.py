"""The six ways the trainer used to stop or lose a decision (issue 10), each against moto's real server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flywheel.jobs.retrain import retrain
from flywheel.registry.operator_actions import rollback
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from lambdas.trainer import handler as trainer
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.trainer_helpers import MODELS, alias_version, fresh_handler, invoke, manifest

FAST = {"estimators": "linear", "cv_folds": 2}


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_ESTIMATORS="linear", FLYWHEEL_CV_FOLDS="2")


def test_1_quoted_header_batch_is_quarantined_and_a_good_batch_still_trains(stack: Stack) -> None:
    bad = b'income,expenses,age,dependents,debt,credit_score,tenure_years,region,monthly_savings,"region "\n'
    bad += b"5000,2000,40,1,100,700,2.0,north,100,north\n5100,2000,41,1,100,700,2.0,south,90,south\n"
    stack.put("data/quoted.csv", bad)
    stack.put("data/good.csv", csv_bytes(800, seed=1))
    assert invoke(stack) == {"batchItemFailures": []}
    assert alias_version(stack) == 1
    assert stack.keys("data/") == ["data/good.csv"]
    report = stack.get_json("quarantine/quoted.csv.error.json")
    assert "duplicated column(s) ['region']" in report["problems"][0]["message"]


def test_unexpected_error_in_one_batch_quarantines_only_that_batch(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.data import ingest

    real = ingest.validate_stream

    def flaky(src: Any, key: str, *args: Any, **kw: Any) -> Any:
        if key.endswith("boom.csv"):
            raise KeyError("a bug nobody foresaw")
        return real(src, key, *args, **kw)

    monkeypatch.setattr(ingest, "validate_stream", flaky)
    stack.put("data/boom.csv", csv_bytes(300, seed=2))
    stack.put("data/good.csv", csv_bytes(800, seed=1))
    out = retrain(TrainerSettings(**FAST), s3_client())
    assert out.status == "promoted" and [q.key for q in out.quarantined] == ["data/boom.csv"]
    (problem,) = stack.get_json("quarantine/boom.csv.error.json")["problems"]
    assert problem["check"] == "internal" and problem["exception"] == "KeyError"


def _fail_alias_writes(s3: Any) -> None:
    def hook(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith("aliases/production.json"):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "throttled (test)"}}, "PutObject")

    s3.meta.events.register("before-parameter-build.s3.PutObject", hook, unique_id="fail-alias")


def test_3_approved_version_stranded_by_a_failed_alias_write_is_promoted_on_redelivery(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    records = stack.receive()
    _fail_alias_writes(trainer._s3())
    failed = invoke(stack, records)
    assert failed["batchItemFailures"], "the throttled alias write fails the delivery"
    assert manifest(stack, 1)["status"] == "promoted" and alias_version(stack) is None
    assert "models/savings/lock.json" not in stack.keys(MODELS)  # released on the failure path too
    trainer._s3().meta.events.unregister("before-parameter-build.s3.PutObject", unique_id="fail-alias")
    assert invoke(stack, records) == {"batchItemFailures": []}  # SQS delivers the same records again
    assert alias_version(stack) == 1
    assert Registry(s3_client(), stack.bucket, "savings").versions() == [1]  # nothing trained twice


def test_3_rollback_between_decision_and_retry_is_respected(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    assert retrain(TrainerSettings(**FAST), s3_client()).status == "promoted"
    stack.put("data/b.csv", csv_bytes(800, seed=2))
    records = stack.receive()
    _fail_alias_writes(trainer._s3())
    assert invoke(stack, records)["batchItemFailures"]
    assert manifest(stack, 2)["status"] == "promoted" and alias_version(stack) == 1
    trainer._s3().meta.events.unregister("before-parameter-build.s3.PutObject", unique_id="fail-alias")
    registry = Registry(s3_client(), stack.bucket, "savings")
    # an operator acts in between: promote v2 by hand, then roll back to v1
    registry.move_alias(2, registry.alias(), actor="ops", reason="try")
    rollback(registry, actor="ops")
    assert invoke(stack, records) == {"batchItemFailures": []}
    assert alias_version(stack) == 1
    assert stack.get_json(MODELS + "aliases/production.json")["updated_by"] == "ops"


def test_6_reupload_during_quarantine_survives(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from flywheel.data import ingest

    good = csv_bytes(800, seed=1)
    stack.put("data/x.csv", b"not,a,batch\n1,2,3\n")
    real = ingest.validate_stream

    def validate_then_reupload(src: Any, key: str, *args: Any, **kw: Any) -> Any:
        try:
            return real(src, key, *args, **kw)
        finally:
            stack.put("data/x.csv", good)  # the user fixes the file while the trainer decides

    monkeypatch.setattr(ingest, "validate_stream", validate_then_reupload)
    out = retrain(TrainerSettings(**FAST), s3_client())
    assert [q.key for q in out.quarantined] == ["data/x.csv"] and not out.quarantined[0].removed
    assert stack.s3.get_object(Bucket=stack.bucket, Key="data/x.csv")["Body"].read() == good
    assert stack.s3.get_object(Bucket=stack.bucket, Key="quarantine/x.csv")["Body"].read().startswith(b"not,a")
    monkeypatch.setattr(ingest, "validate_stream", real)
    assert retrain(TrainerSettings(**FAST), s3_client()).status == "promoted"  # the fixed file trains


def test_5_a_small_share_of_repeated_rows_is_accepted_and_reported(stack: Stack) -> None:
    rows = csv_bytes(4000, seed=1)
    repeated = b"".join(rows.splitlines(keepends=True)[1:3])  # 2 of 4002 rows: 0.05%
    stack.put("data/a.csv", rows + repeated)
    out = retrain(TrainerSettings(**FAST), s3_client())
    assert out.status == "promoted" and not out.quarantined
    assert manifest(stack, 1)["data"]["batches"][0]["duplicate_rows"] == 2


def test_4_validated_once_and_deleting_a_csv_removes_it_from_training(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    stack.put("data/b.csv", csv_bytes(800, seed=2))
    first = retrain(TrainerSettings(**FAST), s3_client())
    assert first.validated_batches == 2
    index = stack.get_json("validated/savings/index.json")
    sha = index["batches"]["data/a.csv"]["sha256"]
    assert f"validated/savings/{sha}.parquet" in stack.keys("validated/")
    stack.put("data/c.csv", csv_bytes(800, seed=3))
    second = retrain(TrainerSettings(**FAST), s3_client())
    assert second.validated_batches == 1  # only the new one
    stack.s3.delete_object(Bucket=stack.bucket, Key="data/b.csv")
    third = retrain(TrainerSettings(**FAST), s3_client())
    assert third.validated_batches == 0 and third.version == 3
    assert [b["key"] for b in manifest(stack, 3)["data"]["batches"]] == ["data/a.csv", "data/c.csv"]


def test_4_window_takes_the_newest_batches_and_lists_the_rest(stack: Stack) -> None:
    for i in range(1, 5):
        stack.put(f"data/b{i}.csv", csv_bytes(600, seed=i))
    stack.put("data/b4-copy.csv", csv_bytes(600, seed=4))
    out = retrain(TrainerSettings(train_window_rows=1300, **FAST), s3_client())
    assert out.status == "promoted"
    data = manifest(stack, 1)["data"]
    assert data["window_rows"] == 1300 and data["rows"] == 1200
    trained = {b["key"] for b in data["batches"]}
    copies = {"data/b4.csv", "data/b4-copy.csv"}
    assert len(trained) == 2 and len(trained & copies) == 1  # the newest content, once
    reasons = {b["key"]: b["reason"] for b in data["left_out"]}
    assert set(reasons) | trained == {f"data/b{i}.csv" for i in range(1, 5)} | copies
    (copy,) = copies - trained
    assert reasons[copy] == f"same content as {(trained & copies).pop()}"
    assert [r for r in reasons.values() if "window" in r] == ["outside the training window (1300 rows)"] * 2
    assert all(b["version_id"] and b["sha256"] and b["rows"] == 600 for b in data["left_out"])


def test_busy_lock_queues_one_delayed_retrain_instead_of_failing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_QUEUE_URL", stack.queue_url)
    trainer._settings.cache_clear()
    stack.put("data/a.csv", csv_bytes(500, seed=1))
    records = stack.receive()
    registry = Registry(s3_client(), stack.bucket, "savings")
    with registry.lock("someone-else", ttl_seconds=600):
        assert invoke(stack, records) == {"batchItemFailures": []}
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    # what the delayed message will say when it arrives, handed to the handler now
    body = {"Event": "flywheel:Retrain", "model": "savings", "keys": ["data/a.csv"]}
    retry = [{"messageId": "r-1", "body": json.dumps(body), "eventSource": "aws:sqs"}]
    assert invoke(stack, retry) == {"batchItemFailures": []}
    assert alias_version(stack) == 1


def test_a_lost_validated_copy_is_made_again_from_its_csv(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    assert retrain(TrainerSettings(**FAST), s3_client()).validated_batches == 1
    sha = stack.get_json("validated/savings/index.json")["batches"]["data/a.csv"]["sha256"]
    stack.s3.delete_object(Bucket=stack.bucket, Key=f"validated/savings/{sha}.parquet")
    stack.put("data/b.csv", csv_bytes(800, seed=2))
    out = retrain(TrainerSettings(**FAST), s3_client())
    assert out.status in {"promoted", "rejected"} and out.version == 2
    assert f"validated/savings/{sha}.parquet" in stack.keys("validated/")
    assert manifest(stack, 2)["data"]["rows"] == 1600


def test_approved_but_left_where_an_operator_put_it_is_not_called_promoted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.jobs import retrain as core

    stack.put("data/a.csv", csv_bytes(800, seed=1))
    assert retrain(TrainerSettings(**FAST), s3_client()).status == "promoted"
    stack.put("data/b.csv", csv_bytes(800, seed=2))
    real = core.fit_candidate

    def operator_acts_during_training(*args: Any, **kw: Any) -> Any:
        registry = Registry(s3_client(), stack.bucket, "savings")
        registry.move_alias(1, registry.alias(), actor="ops", reason="pin v1 while we look")
        return real(*args, **kw)

    monkeypatch.setattr(core, "fit_candidate", operator_acts_during_training)
    out = retrain(TrainerSettings(**FAST), s3_client())
    assert out.status == "approved" and out.production_version == 1, out.reasons
    assert "left there" in out.reasons[-1] and alias_version(stack) == 1
