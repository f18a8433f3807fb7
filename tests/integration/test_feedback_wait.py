"""A feedback file's batch waits for captures still in flight (docs/captures.md, "Processing on arrival"),
against moto's server: real S3 -> SQS notifications, and the delayed re-delivery a real (moto) SQS message."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from app.local.worker import poll_once
from flywheel.cli.main import main
from lambdas.trainer.events import CAPTURES_WAITED, ObjectRef, notification, parse_event
from tests.conftest import Stack
from tests.integration.feedback_helpers import SUMMARY, labels_csv, put_captures
from tests.integration.trainer_helpers import fresh_handler, invoke

FILE, BATCH = "feedback/savings/late.csv", "data/savings/feedback/late.csv"
IDS = [f"c{i}" for i in range(20)]


@pytest.fixture(autouse=True)
def _policy_on(
    bucket: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    fresh_handler(monkeypatch, FLYWHEEL_QUEUE_URL=bucket.queue_url)
    assert main(["feedback-policy", "--model", "savings", "--train"]) == 0
    capsys.readouterr()


def delayed(stack: Stack) -> int:
    got = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    return int(got["ApproximateNumberOfMessagesDelayed"])


def batch_rows(stack: Stack) -> list[str]:
    body = stack.s3.get_object(Bucket=stack.bucket, Key=BATCH)["Body"].read().decode()
    return body.splitlines()[1:]


def processed(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The extra fields of the handler's one 'feedback file processed' log record since the last call."""
    [record] = [r for r in caplog.records if r.getMessage().startswith("feedback file processed")]
    caplog.clear()
    return record.__dict__


def test_the_batch_waits_for_captures_in_flight_and_the_redelivery_has_all_rows(
    bucket: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_FEEDBACK_CAPTURE_WAIT_SECONDS="12")  # room for a slow machine
    put_captures(bucket, {i: 100.0 for i in IDS[:10]})  # flushed before the file arrives
    bucket.put(FILE, labels_csv({i: 1.0 * n for n, i in enumerate(IDS)}))

    assert invoke(bucket) == {"batchItemFailures": []}
    assert bucket.keys("data/") == [] and delayed(bucket) == 1  # no batch yet: one delayed re-delivery
    waiting = processed(caplog)
    assert waiting["redelivery_in_seconds"] <= 12 and waiting["labelled"] == 20
    assert bucket.get_json(SUMMARY)["versions"][0]["labelled"] == 10  # live quality published on this pass

    put_captures(bucket, {i: 100.0 for i in IDS[10:]}, seq=2)  # the other replica's flush lands
    # the re-delivery, taken by the worker of `flywheel up` (the same handler) once SQS releases it
    deadline = time.monotonic() + 60  # the delay is at most 12 s: room for a loaded machine
    while (taken := poll_once(bucket.sqs, bucket.queue_url, debounce=0, wait=1)) is None:
        assert time.monotonic() < deadline, "the delayed re-delivery never arrived"
    assert taken == 1
    assert len(batch_rows(bucket)) == 20
    head = bucket.s3.head_object(Bucket=bucket.bucket, Key=BATCH)
    assert head["Metadata"]["labelled-rows"] == "20" and head["Metadata"]["feedback-key"] == FILE
    assert processed(caplog)["batch"] == {"key": BATCH, "created": True, "rows": 20, "unmatched": 0, "ambiguous": 0,
                                          "ambiguous_ids": []}  # fmt: skip
    assert bucket.get_json(SUMMARY)["versions"][0]["labelled"] == 20  # republished on the second pass too
    assert delayed(bucket) == 0  # a re-delivery never waits again
    [record] = bucket.receive()  # the batch's own notification, for the retrain
    assert "data%2Fsavings%2Ffeedback%2Flate.csv" in record["body"]


def test_an_old_file_makes_its_batch_at_once_reporting_the_unmatched(
    bucket: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_FEEDBACK_CAPTURE_WAIT_SECONDS="1")
    put_captures(bucket, {i: 100.0 for i in IDS[:10]})
    bucket.put(FILE, labels_csv({i: 1.0 for i in IDS}))
    time.sleep(2)  # older than the grace period by the time the trainer gets it

    assert invoke(bucket) == {"batchItemFailures": []}
    assert len(batch_rows(bucket)) == 10 and delayed(bucket) == 0
    assert processed(caplog)["batch"] == {"key": BATCH, "created": True, "rows": 10, "unmatched": 10, "ambiguous": 0,
                                          "ambiguous_ids": []}  # fmt: skip


def test_a_failing_delayed_send_makes_the_batch_at_once(
    bucket: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_QUEUE_URL=bucket.queue_url + "-no-such-queue")  # the send fails
    put_captures(bucket, {i: 100.0 for i in IDS[:10]})
    bucket.put(FILE, labels_csv({i: 1.0 for i in IDS}))

    assert invoke(bucket) == {"batchItemFailures": []}
    assert len(batch_rows(bucket)) == 10 and delayed(bucket) == 0  # never lost
    assert processed(caplog)["batch"]["unmatched"] == 10


def test_a_fully_captured_file_never_waits(bucket: Stack, caplog: pytest.LogCaptureFixture) -> None:
    put_captures(bucket, {i: 100.0 for i in IDS})
    bucket.put(FILE, labels_csv({i: 1.0 for i in IDS}))

    assert invoke(bucket) == {"batchItemFailures": []}  # young (default 120 s grace), but nothing unmatched
    assert len(batch_rows(bucket)) == 20 and delayed(bucket) == 0
    assert processed(caplog)["batch"]["rows"] == 20


def test_the_redelivered_record_reads_back_as_the_same_feedback_record() -> None:
    ref = ObjectRef("b", "feedback/savings/week 1+2.csv", "ObjectCreated:Put", "v1")
    body = notification(ref, **{CAPTURES_WAITED: True})
    [msg] = parse_event({"Records": [{"messageId": "m", "body": json.dumps(body), "eventSource": "aws:sqs"}]})
    assert msg.objects == [ref] and msg.captures_waited and not msg.retrain_requested
    [plain] = parse_event({"Records": [{"messageId": "n", "body": json.dumps(notification(ref))}]})
    assert plain.objects == [ref] and not plain.captures_waited
