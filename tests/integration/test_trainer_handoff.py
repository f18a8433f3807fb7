"""A retrain that will not fit the Lambda is handed to bigger compute: a local process here, AWS Batch in the cloud."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from flywheel.jobs.retrain import retrain
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.training.capacity import plan
from lambdas.trainer import handler as trainer
from lambdas.trainer import offload
from tests.conftest import Stack
from tests.helpers import FakeLambdaContext, csv_bytes, wait_for
from tests.integration.trainer_helpers import fresh_handler


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_ESTIMATORS="linear", FLYWHEEL_CV_FOLDS="2")


def test_plan_uses_rows_and_the_time_left(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(2000, seed=1))
    s = TrainerSettings()
    roomy = plan(s, s3_client(), model="savings", seconds_left=900, memory_bytes=3008 << 20)
    assert roomy.fits and 1500 < roomy.rows < 2600 and roomy.new_bytes > 0
    tight = plan(s, s3_client(), model="savings", seconds_left=0.01, memory_bytes=3008 << 20)
    assert not tight.fits and "s left" in tight.reasons[0]
    small = plan(s, s3_client(), model="savings", seconds_left=900, memory_bytes=100 << 20)
    assert not small.fits and "MiB available" in small.reasons[0]


def test_too_big_for_the_lambda_runs_as_a_local_job(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_OFFLOAD", "process")
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    context = FakeLambdaContext(timeout_seconds=0.01)  # as if the invocation were about to time out
    result = trainer.handler({"Records": stack.receive()}, context)
    assert result == {"batchItemFailures": []}
    registry = Registry(s3_client(), stack.bucket, "savings")
    # the Lambda claimed the lock for the job: a delivery arriving before the job has started must not
    # start a second one
    claim = registry.lock_doc()  # the job is still importing its libraries: the claim is the Lambda's
    assert claim is not None and claim["owner"].startswith("handoff:")
    wait_for(lambda: registry.alias() is not None, timeout=120, what="the handed-off retrain to promote v1")
    m = registry.manifest(1)
    assert m["status"] == "promoted" and m["resources"]["runs_on"] == "local-job"
    wait_for(lambda: registry.lock_doc() is None, timeout=60, what="the job to release the lock it adopted")


def test_a_claimed_hand_off_keeps_other_deliveries_out(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_QUEUE_URL", stack.queue_url)
    monkeypatch.setenv("FLYWHEEL_OFFLOAD", "batch")  # no Batch here: the claim is what is tested
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    records = stack.receive()
    registry = Registry(s3_client(), stack.bucket, "savings")
    token = registry.claim("handoff", 600)
    assert trainer.handler({"Records": records}, FakeLambdaContext()) == {"batchItemFailures": []}
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"  # retried later, no job submitted
    # the job adopts the claim although it has not expired
    out = retrain(TrainerSettings(), s3_client(), actor="job", adopt_lock=token)
    assert out.status == "promoted" and registry.lock_doc() is None


def test_a_lambda_run_that_died_is_handed_off_next_time(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_OFFLOAD", "process")
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    records = stack.receive()
    dead = {"owner": "lambda@sandbox:1", "expires_at": time.time() - 1}
    stack.put("models/savings/lock.json", json.dumps(dead).encode())
    assert trainer.handler({"Records": records}, FakeLambdaContext()) == {"batchItemFailures": []}
    registry = Registry(s3_client(), stack.bucket, "savings")
    wait_for(lambda: registry.alias() is not None, timeout=120, what="the handed-off retrain to promote v1")
    assert registry.manifest(1)["resources"]["runs_on"] == "local-job"


def test_batch_submission_names_the_queue_definition_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("batch", region_name="us-east-1")
    stub = Stubber(client)
    expected = {
        "jobName": stub_any(),
        "jobQueue": "arn:aws:batch:us-east-1:1:job-queue/q",
        "jobDefinition": "arn:aws:batch:us-east-1:1:job-definition/d:1",
        "parameters": {"model": "savings", "lock": "handoff:abc"},
        "tags": stub_any(),
    }
    stub.add_response("submit_job", {"jobArn": "arn:j", "jobName": "n", "jobId": "job-123"}, expected)
    monkeypatch.setattr(offload.boto3, "client", lambda name, **_: client)
    s = TrainerSettings(
        bucket="flywheel-x",
        offload="batch",
        offload_job_queue=expected["jobQueue"],
        offload_job_definition=expected["jobDefinition"],
    )
    with stub:
        started = offload.submit(
            s, model="savings", reason="~2000 s estimated; 900 s left (50%)", lock_token="handoff:abc"
        )
        assert started == "batch job job-123"
    stub.assert_no_pending_responses()


def stub_any() -> Any:
    from botocore.stub import ANY

    return ANY


def test_delayed_retry_message_is_understood_by_the_handler(stack: Stack) -> None:
    s = TrainerSettings(queue_url=stack.queue_url)
    assert offload.retry_later(s, model="savings", keys=["data/a.csv"], expires_at=None, reason="busy")
    got = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert got["ApproximateNumberOfMessagesDelayed"] == "1"
    body = {"Event": "flywheel:Retrain", "model": "savings", "keys": ["data/a.csv"]}
    from lambdas.trainer.events import parse_event

    (msg,) = parse_event({"Records": [{"messageId": "1", "body": json.dumps(body), "eventSource": "aws:sqs"}]})
    assert msg.retrain_requested and not msg.error
