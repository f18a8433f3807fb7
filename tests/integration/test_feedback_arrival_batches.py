"""Feedback arrivals in bulk, on moto's server with real S3 -> SQS notifications: a file that makes the trainer
fail costs only its own message (never the data/ batches of the same invocation), live quality is republished
once per model however many files arrive together, and same-named files in different folders make two batches."""

from __future__ import annotations

import pytest

from flywheel.feedback.policy import set_policy
from flywheel.jobs import feedback_arrival
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.feedback_helpers import SUMMARY, labels_csv, put_captures, put_manifest
from tests.integration.trainer_helpers import fresh_handler, invoke, manifest


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_GATE_TOLERANCE="1.0")


def test_a_file_the_trainer_fails_on_costs_only_its_own_message(bucket: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    put_captures(bucket, {"p1": 100.0, "p2": 200.0})
    bucket.put("feedback/savings/poison.csv", labels_csv({"p1": 110.0}))
    bucket.put("feedback/savings/fine.csv", labels_csv({"p2": 190.0}))
    bucket.put("data/savings/batch-1.csv", csv_bytes(2_000, seed=1))
    records = bucket.receive()
    assert sum("ObjectCreated" in r["body"] for r in records) == 3
    real = feedback_arrival._checked

    def checked(s3, settings, key, model, schema):
        if key.endswith("poison.csv"):
            raise RuntimeError("a fault nobody foresaw")
        return real(s3, settings, key, model, schema)

    monkeypatch.setattr(feedback_arrival, "_checked", checked)
    result = invoke(bucket, records)

    poison = [r["messageId"] for r in records if "poison.csv" in r["body"]]
    assert result == {"batchItemFailures": [{"itemIdentifier": poison[0]}]}
    assert manifest(bucket, 1)["status"] == "promoted"  # the data/ batch of the same invocation trained
    assert bucket.get_json(SUMMARY)["versions"][0]["labelled"] == 2  # both files' labels count in the join


def test_live_quality_is_republished_once_per_model_for_files_arriving_together(
    bucket: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_captures(bucket, {f"p{i}": float(i) for i in range(6)})
    put_manifest(bucket, 1, 0.9)
    for n in range(3):
        bucket.put(f"feedback/savings/part-{n}.csv", labels_csv({f"p{2 * n}": 1.0 + n, f"p{2 * n + 1}": 2.0 * n}))
    records = bucket.receive()
    assert sum("ObjectCreated" in r["body"] for r in records) == 3
    calls: list[str] = []
    real = feedback_arrival.refresh_quality

    def counted(s3, settings, model, schema):
        calls.append(model)
        return real(s3, settings, model, schema)

    monkeypatch.setattr("lambdas.trainer.feedback.refresh_quality", counted)
    assert invoke(bucket, records) == {"batchItemFailures": []}
    assert calls == ["savings"]
    assert bucket.get_json(SUMMARY)["versions"][0]["labelled"] == 6


def test_same_named_files_in_different_folders_make_two_batches(bucket: Stack) -> None:
    put_captures(bucket, {"a1": 10.0, "b1": 20.0})
    set_policy(bucket.s3, bucket.bucket, "savings", train=True, by="test")
    bucket.put("feedback/savings/2026-05-01/labels.csv", labels_csv({"a1": 11.0}))
    bucket.put("feedback/savings/2026-05-02/labels.csv", labels_csv({"b1": 21.0}))
    assert invoke(bucket, bucket.receive()) == {"batchItemFailures": []}
    made = bucket.keys("data/savings/feedback/")
    assert made == ["data/savings/feedback/2026-05-01/labels.csv", "data/savings/feedback/2026-05-02/labels.csv"]
    rows = [bucket.s3.get_object(Bucket=bucket.bucket, Key=k)["Body"].read().decode().splitlines() for k in made]
    assert [len(r) for r in rows] == [2, 2]  # a header and its own file's label each
