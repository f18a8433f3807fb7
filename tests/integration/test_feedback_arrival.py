"""A feedback file processed on arrival, against moto's server: the file is uploaded straight to the bucket (not
through `flywheel feedback`), S3 notifies the queue, and the trainer handler gets the queue's messages, as the
Lambda (cloud) and the worker of `flywheel up` (local) do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import r2_score

from flywheel.cli.main import main
from flywheel.feedback.policy import policy_key
from flywheel.jobs.feedback_arrival import process
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.feedback_helpers import SUMMARY, labels_csv, put_captures, put_manifest
from tests.integration.trainer_helpers import fresh_handler, invoke, manifest


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_GATE_TOLERANCE="1.0")  # every retrain here publishes a version


def test_a_valid_file_publishes_the_exact_live_quality(bucket: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    preds = {"p1": 100.0, "p2": 250.0, "p3": 80.0, "p4": -50.0, "p5": 300.0}
    put_captures(bucket, preds)
    put_manifest(bucket, 1, 0.9)
    labels = {"p1": 120.0, "p2": 200.0, "p3": 70.0, "p4": -40.0, "p5": 350.0}
    bucket.put("feedback/savings/week-1.csv", labels_csv({**labels, "ghost": 5.0}))

    assert invoke(bucket) == {"batchItemFailures": []}
    doc = bucket.get_json(SUMMARY)
    live = r2_score(list(labels.values()), [preds[k] for k in labels])
    assert doc["model"] == "savings" and doc["metric"] == "r2"
    [v1] = doc["versions"]
    assert v1["version"] == 1 and v1["labelled"] == 5 and v1["captured"] == 5
    assert v1["live"] == pytest.approx(live, abs=1e-12)
    assert v1["holdout"] == 0.9 and v1["shortfall"] == pytest.approx(0.9 - live, abs=1e-12)
    # and as CloudWatch metrics (EMF lines on the Lambda's log: lambdas/trainer/quality_metrics.py)
    emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{") and '"_aws"' in x]
    [figure] = [e for e in emf if "LiveQuality" in e]
    assert figure["model"] == "savings" and figure["version"] == "1"
    assert figure["LiveQuality"] in (pytest.approx(live), [pytest.approx(live)])
    assert bucket.keys("feedback/") == ["feedback/savings/week-1.csv"]  # kept where it was
    assert not bucket.keys("data/") and not bucket.keys("quarantine/")  # policy off (the default): no batch


BAD = {
    "wrong-type": (b"id,monthly_savings\np1,120\np2,lots\n", "type", "monthly_savings", [3]),
    "unknown-header": (b"id,monthly_savings,comment\np1,120,ok\n", "header", None, None),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_file_is_quarantined_with_a_report_and_kept(bucket: Stack, kind: str) -> None:
    body, check, column, lines = BAD[kind]
    key = f"feedback/savings/{kind}.csv"
    bucket.put(key, body)

    assert invoke(bucket) == {"batchItemFailures": []}  # retrying cannot fix a file: the message succeeds
    kept = f"quarantine/_feedback/savings/{kind}.csv"
    assert bucket.keys("quarantine/") == [kept, kept + ".error.json"]
    assert bucket.s3.get_object(Bucket=bucket.bucket, Key=kept)["Body"].read() == body
    report = bucket.get_json(kept + ".error.json")
    assert report["file"] == key and report["quarantined_as"] == kept and report["removed_from_data"] is True
    [problem] = report["problems"]
    assert problem["check"] == check
    if column:
        assert problem["column"] == column and problem["lines"] == lines
    else:
        assert "comment" in problem["message"]
    # out of feedback/ (as a bad batch leaves data/), and the uploaded version is still in the bucket
    assert bucket.keys("feedback/") == []
    versions = bucket.s3.list_object_versions(Bucket=bucket.bucket, Prefix=key)["Versions"]
    assert bucket.s3.get_object(Bucket=bucket.bucket, Key=key, VersionId=versions[0]["VersionId"])[
        "Body"].read() == body  # fmt: skip
    assert SUMMARY not in bucket.keys("models/")


def test_the_policy_turns_labelled_captures_into_a_batch_the_next_retrain_trains_on(
    bucket: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket.put("data/savings/first.csv", csv_bytes(800, seed=1))
    invoke(bucket)
    assert manifest(bucket, 1)["status"] == "promoted"
    put_captures(bucket, {f"c{i}": 100.0 + i for i in range(40)})
    labels = labels_csv({f"c{i}": 500.0 + 10 * i for i in range(40)})

    bucket.put("feedback/savings/off.csv", labels)  # policy off (the default): live quality only
    assert invoke(bucket) == {"batchItemFailures": []}
    assert bucket.keys("data/savings/feedback/") == [] and SUMMARY in bucket.keys("models/")

    capsys.readouterr()  # the handler's log lines
    assert main(["feedback-policy", "--model", "savings", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "savings", "train": False, "by": None, "at": None}
    assert main(["feedback-policy", "--model", "savings", "--train", "--json"]) == 0
    set_to = json.loads(capsys.readouterr().out)
    assert set_to["train"] is True and set_to["by"].endswith("(cli)") and set_to["at"]
    assert bucket.get_json(policy_key("savings")) == {k: set_to[k] for k in ("train", "by", "at")}

    bucket.put("feedback/savings/on.csv", labels)
    assert invoke(bucket) == {"batchItemFailures": []}
    batch = "data/savings/feedback/on.csv"
    assert bucket.keys("data/savings/feedback/") == [batch]
    head = bucket.s3.head_object(Bucket=bucket.bucket, Key=batch)
    assert head["Metadata"]["source"] == "feedback" and head["Metadata"]["feedback-key"] == "feedback/savings/on.csv"
    assert head["Metadata"]["uploaded-by"].startswith("trainer (feedback policy set by ")

    # the batch's own notification: the handler retrains, and the manifest's lineage names the batch
    assert invoke(bucket) == {"batchItemFailures": []}
    m = manifest(bucket, 2)
    assert batch in [b["key"] for b in m["data"]["batches"]] and m["data"]["rows"] == 840

    # a repeat (the same notification delivered again) is a no-op, not an error
    again = process(s3_client(), TrainerSettings(bucket=bucket.bucket), "feedback/savings/on.csv")
    assert again.status == "accepted" and again.batch == {"key": batch, "created": False, "rows": None,
                                                         "unmatched": None, "ambiguous": None,
                                                         "ambiguous_ids": None}  # fmt: skip
    # and `flywheel feedback --train` of a file the trainer got to first reports the trainer's batch
    cli_file = tmp_path / "cli.csv"
    cli_file.write_bytes(labels)
    assert main(["feedback", str(cli_file), "--model", "savings", "--json"]) == 0
    capsys.readouterr()
    assert invoke(bucket) == {"batchItemFailures": []}  # the trainer writes data/savings/feedback/cli.csv
    assert "data/savings/feedback/cli.csv" in bucket.keys("data/savings/feedback/")


def test_the_cli_train_flag_and_the_trainer_make_one_batch(
    bucket: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_captures(bucket, {f"c{i}": 100.0 for i in range(10)})
    assert main(["feedback-policy", "--train"]) == 0
    assert "set: train on feedback on" in capsys.readouterr().out
    path = tmp_path / "labels.csv"
    path.write_bytes(labels_csv({f"c{i}": 1.0 * i for i in range(10)}))
    assert main(["feedback", str(path), "--model", "savings", "--train", "--json"]) == 0  # the CLI writes first
    assert json.loads(capsys.readouterr().out)["batch"]["key"] == "data/savings/feedback/labels.csv"
    records = [r for r in bucket.receive() if '"feedback%2Fsavings%2F' in r["body"]]  # (keys are URL-encoded)
    assert len(records) == 1
    assert invoke(bucket, records) == {"batchItemFailures": []}  # the trainer finds the batch made: no error
    assert bucket.keys("data/") == ["data/savings/feedback/labels.csv"]


@pytest.mark.parametrize("key", ["feedback/nosuch/labels.csv", "feedback/labels.csv"])
def test_feedback_for_no_registered_model_is_quarantined_naming_the_registered_ones(
    bucket: Stack, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket.put(key, labels_csv({"p1": 1.0}))
    assert invoke(bucket) == {"batchItemFailures": []}
    kept = "quarantine/_feedback/" + key.removeprefix("feedback/")
    report: dict[str, Any] = bucket.get_json(kept + ".error.json")
    assert report["problems"][0]["check"] == "model"
    assert "registered: ['savings']" in report["problems"][0]["message"]
    assert bucket.keys("feedback/") == [] and bucket.keys("data/") == []
    assert "batch for no registered model" not in capsys.readouterr().out  # not taken for a training batch


def test_s3_failing_returns_the_message_for_a_retry(bucket: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket.put("feedback/savings/week-1.csv", labels_csv({"p1": 1.0}))
    records = [r for r in bucket.receive() if "s3:TestEvent" not in r["body"]]
    monkeypatch.setenv("FLYWHEEL_BUCKET", "flywheel-no-such-bucket")  # every read fails: NoSuchBucket
    fresh_handler(monkeypatch)
    renamed = [{**r, "body": r["body"].replace(bucket.bucket, "flywheel-no-such-bucket")} for r in records]
    assert invoke(bucket, renamed) == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
