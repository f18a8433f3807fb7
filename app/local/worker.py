"""The local stand-in for Lambda's SQS poller: long-poll, debounce, call the trainer handler, delete.

Failed messages (batchItemFailures or a crash) are not deleted: they come back after the visibility
timeout and, after the queue's maxReceiveCount, land in the dead-letter queue, as on AWS. A second thread
stands in for the scheduled rollout judge Lambda: the same handler, every --judge-interval seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("flywheel.worker")


@dataclass
class LocalContext:
    """What the Lambda runtime would hand the handler."""

    function_name: str = "flywheel-trainer-local"
    memory_limit_in_mb: int = 0
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:flywheel-trainer-local"
    aws_request_id: str = ""
    timeout_seconds: float = 900.0  # Lambda's maximum, like the cloud trainer's
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.started + self.timeout_seconds - time.monotonic()) * 1000)


def _receive(sqs: Any, queue_url: str, wait: int) -> list[dict[str, Any]]:
    got = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, AttributeNames=["ApproximateReceiveCount"]
    )
    return list(got.get("Messages", []))


def poll_once(sqs: Any, queue_url: str, *, debounce: float, max_records: int = 100, wait: int = 5,
              before: Callable[[], None] | None = None) -> int | None:  # fmt: skip
    """One Lambda-like invocation: gather messages for `debounce` seconds, call `before`, then the handler once."""
    from lambdas.trainer.handler import handler

    messages = _receive(sqs, queue_url, wait)
    if not messages:
        return None
    deadline = time.monotonic() + debounce
    while len(messages) < max_records and time.monotonic() < deadline:
        more = _receive(sqs, queue_url, wait=max(0, min(1, int(deadline - time.monotonic()))))
        messages += more
        if not more:
            break
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "eventSource": "aws:sqs", "attributes": m.get("Attributes", {})} for m in messages]  # fmt: skip
    if before is not None:
        before()
    try:
        result = handler({"Records": records}, LocalContext(aws_request_id=str(uuid.uuid4())))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
    except Exception:
        log.exception("trainer invocation failed; %d message(s) will be retried", len(records))
        return len(records)
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    if failed:
        log.warning("%d message(s) failed and will be retried (then dead-lettered)", len(failed))
    return len(records)


@dataclass
class MlflowGate:
    """The MLflow that `flywheel up` starts beside the worker answers in ~7 s: the first retrain waits for it (the
    messages are gathered meanwhile), so that the seed versions are mirrored too. Bounded: past `deadline` the
    worker goes on, and that retrain's mirror records MLflow down (`flywheel mlflow sync` repairs)."""

    url: str
    deadline: float
    stop: threading.Event
    passed: bool = False

    def wait(self) -> None:
        from app.local.probes import http_ok

        while not self.passed:
            if http_ok(self.url.rstrip("/") + "/health"):
                self.passed = True
            elif time.monotonic() > self.deadline or self.stop.wait(0.3):
                log.warning("MLflow at %s is not answering; training without waiting for it", self.url)
                self.passed = True


def run(queue_url: str, debounce: float, stop: threading.Event, mlflow_wait: float = 0.0) -> None:
    from flywheel.storage import sqs_client

    url = os.environ.get("MLFLOW_TRACKING_URI", "")
    gate = MlflowGate(url, time.monotonic() + mlflow_wait, stop) if url and mlflow_wait > 0 else None
    if gate is not None:
        import mlflow.tracking  # noqa: F401 - the mirror's client: imported while MLflow starts, not in a retrain
    sqs = sqs_client()
    log.info("worker polling %s (debounce %.1fs)", queue_url, debounce)
    while not stop.is_set():
        try:
            poll_once(sqs, queue_url, debounce=debounce, wait=2, before=gate.wait if gate else None)
        except Exception:  # the queue being briefly unreachable must not end the worker
            log.exception("poll failed; retrying")
            stop.wait(2)


def judge_forever(interval: float, stop: threading.Event) -> None:
    """The local stand-in for the scheduled judge Lambda: one judge pass over every model each `interval`."""
    from lambdas.judge.handler import handler

    while not stop.wait(interval):
        try:
            handler({"source": "flywheel.local", "detail-type": "Scheduled Event"}, LocalContext(timeout_seconds=60))
        except Exception:  # the next pass retries, as the next scheduled invocation would
            log.exception("judge pass failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local trainer worker: SQS -> the trainer Lambda handler.")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--debounce", type=float, default=2.0, help="seconds to gather more records (batching window)")
    parser.add_argument("--judge-interval", type=float, default=60.0,
                        help="seconds between rollout judge passes (as the cloud's judge schedule)")  # fmt: skip
    parser.add_argument("--mlflow-wait", type=float, default=0.0,
                        help="seconds to wait for MLFLOW_TRACKING_URI's /health before the first retrain")  # fmt: skip
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no CloudWatch here: keep the log readable
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    judge = threading.Thread(target=judge_forever, args=(args.judge_interval, stop), name="judge", daemon=True)
    judge.start()
    run(args.queue_url, args.debounce, stop, args.mlflow_wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
