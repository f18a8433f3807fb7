"""Trainer Lambda: SQS (S3 notifications) -> one retrain per invocation -> partial batch failures.

Thin by design: parse the event, call flywheel.trainer.retrain, report. The local worker of
`flywheel up` calls this same function.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from flywheel.errors import FlywheelError, LockBusy
from flywheel.events import parse_event, relevant
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.trainer import Outcome, retrain

logger = Logger(service="flywheel-trainer")
metrics = Metrics(namespace="Flywheel", service="flywheel-trainer")
tracer = Tracer(service="flywheel-trainer")


@cache
def _settings() -> TrainerSettings:
    return TrainerSettings()  # type: ignore[call-arg]  # bucket comes from the environment


@cache
def _s3() -> Any:
    return s3_client()


def _emit(outcome: Outcome) -> None:
    metrics.add_metric(name="BatchRows", unit=MetricUnit.Count, value=outcome.rows)
    metrics.add_metric(name="QuarantinedBatches", unit=MetricUnit.Count, value=len(outcome.quarantined))
    metrics.add_metric(name="TrainingDuration", unit=MetricUnit.Seconds, value=outcome.duration_seconds)
    metrics.add_metric(name="Promoted", unit=MetricUnit.Count, value=int(outcome.status == "promoted"))
    metrics.add_metric(name="Rejected", unit=MetricUnit.Count, value=int(outcome.status == "rejected"))
    primary = outcome.metrics.get("primary_metric")
    if primary:
        metrics.add_metric(name="HoldoutScore", unit=MetricUnit.NoUnit, value=outcome.metrics["candidate"][primary])
        if outcome.metrics.get("production"):
            value = outcome.metrics["production"][primary]
            metrics.add_metric(name="ProductionHoldoutScore", unit=MetricUnit.NoUnit, value=value)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Retrain once however many records arrived; failed messages go back to the queue (then the DLQ)."""
    settings = _settings()
    messages = parse_event(event)
    failures = [m.message_id for m in messages if m.error and m.message_id]
    for m in messages:
        if m.error:
            logger.error("unreadable message", extra={"message_id": m.message_id, "error": m.error})
        elif m.test_event:
            logger.info("ignoring s3:TestEvent", extra={"message_id": m.message_id})
    refs = [r for r in relevant(messages, settings.data_prefix) if r.bucket == settings.bucket]
    if not refs:
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}
    logger.info("retraining", extra={"keys": sorted({r.key for r in refs})})
    try:
        outcome = retrain(settings, _s3(), actor="lambda")
    except (FlywheelError, ClientError, BotoCoreError) as e:
        if isinstance(e, LockBusy):
            logger.warning("another trainer is running; messages will be retried", extra={"error": str(e)})
        else:
            logger.exception("retrain failed")
        if messages and messages[0].message_id is None:
            raise  # a direct S3 invocation has no queue to retry: let Lambda's retry policy see the error
        failures += [m.message_id for m in messages if m.message_id and m.objects]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(failures)]}
    _emit(outcome)
    logger.info(
        "retrain finished",
        extra={
            "status": outcome.status,
            "version": outcome.version,
            "production_version": outcome.production_version,
            "rows": outcome.rows,
            "duration_seconds": outcome.duration_seconds,
            "timings": outcome.timings,
            "quarantined": [q.key for q in outcome.quarantined],
            "reasons": outcome.reasons,
        },
    )
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}
