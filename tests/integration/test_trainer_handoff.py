"""A retrain that will not fit the Lambda is handed to bigger compute: a local process here, AWS Batch in the cloud."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from flywheel.capacity import plan
from flywheel.registry import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from lambdas.trainer import handler as trainer
from lambdas.trainer import offload
from tests.conftest import Stack
from tests.helpers import FakeLambdaContext, csv_bytes, wait_for


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_ESTIMATORS", "linear")
    monkeypatch.setenv("FLYWHEEL_CV_FOLDS", "2")
    trainer._settings.cache_clear()
    trainer._s3.cache_clear()


def test_plan_uses_rows_and_the_time_left(stack: Stack) -> None:
    stack.put("data/a.csv", csv_bytes(2000, seed=1))
    s = TrainerSettings()
    roomy = plan(s, s3_client(), seconds_left=900, memory_bytes=3008 << 20)
    assert roomy.fits and 1500 < roomy.rows < 2600 and roomy.new_bytes > 0
    tight = plan(s, s3_client(), seconds_left=0.01, memory_bytes=3008 << 20)
    assert not tight.fits and "s left" in tight.reasons[0]
    small = plan(s, s3_client(), seconds_left=900, memory_bytes=100 << 20)
    assert not small.fits and "MiB available" in small.reasons[0]


def test_too_big_for_the_lambda_runs_as_a_local_job(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_OFFLOAD", "process")
    stack.put("data/a.csv", csv_bytes(800, seed=1))
    context = FakeLambdaContext(timeout_seconds=0.01)  # as if the invocation were about to time out
    result = trainer.handler({"Records": stack.receive()}, context)
    assert result == {"batchItemFailures": []}
    registry = Registry(s3_client(), stack.bucket, "savings")
    wait_for(lambda: registry.alias() is not None, timeout=120, what="the handed-off retrain to promote v1")
    m = registry.manifest(1)
    assert m["status"] == "promoted" and m["resources"]["runs_on"] == "local-job"


def test_batch_submission_names_the_queue_definition_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("batch", region_name="us-east-1")
    stub = Stubber(client)
    expected = {
        "jobName": stub_any(),
        "jobQueue": "arn:aws:batch:us-east-1:1:job-queue/q",
        "jobDefinition": "arn:aws:batch:us-east-1:1:job-definition/d:1",
        "parameters": {"model": "savings"},
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
        assert offload.submit(s, reason="~2000 s estimated, 900 s left") == "batch job job-123"
    stub.assert_no_pending_responses()


def stub_any() -> Any:
    from botocore.stub import ANY

    return ANY


def test_delayed_retry_message_is_understood_by_the_handler(stack: Stack) -> None:
    s = TrainerSettings(queue_url=stack.queue_url)
    assert offload.retry_later(s, keys=["data/a.csv"], expires_at=None, reason="busy")
    got = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert got["ApproximateNumberOfMessagesDelayed"] == "1"
    body = {"Event": "flywheel:Retrain", "model": "savings", "keys": ["data/a.csv"]}
    from flywheel.events import parse_event

    (msg,) = parse_event({"Records": [{"messageId": "1", "body": json.dumps(body), "eventSource": "aws:sqs"}]})
    assert msg.retrain_requested and not msg.error
