"""Trainer Lambda: SQS (S3 notifications) -> one retrain per invocation -> partial batch failures.

Thin by design: parse the event, decide where the retrain runs (here, or handed to bigger compute when it
will not fit), call flywheel.trainer.retrain, report. The local worker of `flywheel up` calls this same
function.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from flywheel.capacity import plan
from flywheel.errors import FlywheelError, LockBusy
from flywheel.events import Message, parse_event, relevant
from flywheel.registry import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.trainer import Outcome, retrain
from lambdas.trainer import offload

logger = Logger(service="flywheel-trainer")
metrics = Metrics(namespace="Flywheel", service="flywheel-trainer")
tracer = Tracer(service="flywheel-trainer")
DEFAULT_SECONDS = 900.0  # a context without a deadline (a test, a local call) gets Lambda's maximum


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


def _seconds_left(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else DEFAULT_SECONDS


def _handed_off(settings: TrainerSettings, context: Any, seconds_left: float) -> bool:
    """True when the retrain was sent to bigger compute. Raises LockBusy while another trainer runs."""
    registry = Registry(_s3(), settings.bucket, settings.model_name, settings.models_prefix)
    held = registry.lock_doc()
    if held is not None and held.get("expires_at", 0) > time.time():
        raise LockBusy(f"another trainer holds the lock ({held.get('owner')})", expires_at=held.get("expires_at"))
    # an expired lock of a Lambda run means that run died (timeout, out of memory): do not try it here again
    died = held is not None and str(held.get("owner", "")).startswith("lambda@")
    memory_mb = int(getattr(context, "memory_limit_in_mb", 0) or 0)
    memory = memory_mb * 1024 * 1024 if memory_mb else settings.memory_bytes
    p = plan(settings, _s3(), seconds_left=seconds_left, memory_bytes=memory)
    if p.nothing_new or (p.fits and not died):
        return False
    reason = "; ".join(p.reasons) or "the previous Lambda run did not finish (timeout or out of memory)"
    # claim the lock for the job, so no second job starts before it does; the job adopts the claim
    token = registry.claim("handoff", settings.offload_lock_seconds)
    try:
        started = offload.submit(settings, reason=reason, lock_token=token)
    except Exception:
        registry.release(token)
        raise
    logger.info("retrain handed off", extra={"plan": p.to_dict(), "reason": reason, "started": started})
    metrics.add_metric(name="HandedOff", unit=MetricUnit.Count, value=1)
    return True


def _failures(ids: list[str]) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(ids)]}


def _busy(settings: TrainerSettings, e: LockBusy, messages: list[Message], keys: list[str]) -> list[str]:
    """Lock held: one delayed retry message instead of failed deliveries (which would count towards the DLQ)."""
    if offload.retry_later(settings, keys=keys, expires_at=e.detail.get("expires_at"), reason=e.message):
        logger.info("another trainer is running; a delayed retrain was queued", extra={"error": e.message})
        return []
    logger.warning("another trainer is running; messages will be retried", extra={"error": e.message})
    return _retryable(messages)


def _retryable(messages: list[Message]) -> list[str]:
    """The deliveries a failed retrain hands back to the queue (then the DLQ)."""
    return [m.message_id for m in messages if m.message_id and (m.objects or m.retrain_requested)]


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
    if not refs and not any(m.retrain_requested for m in messages):
        return _failures(failures)
    keys = sorted({r.key for r in refs})
    logger.info("retraining", extra={"keys": keys})
    seconds_left = _seconds_left(context)
    direct = bool(messages) and messages[0].message_id is None
    try:
        if settings.offload != "none" and _handed_off(settings, context, seconds_left):
            return _failures(failures)
        outcome = retrain(settings, _s3(), actor="lambda", deadline=time.time() + seconds_left)
    except LockBusy as e:
        if direct:
            raise  # a direct S3 invocation has no queue to retry: let Lambda's retry policy see the error
        return _failures(failures + _busy(settings, e, messages, keys))
    except (FlywheelError, ClientError, BotoCoreError):
        logger.exception("retrain failed")
        if direct:
            raise
        return _failures(
            failures + [m.message_id for m in messages if m.message_id and (m.objects or m.retrain_requested)]
        )
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
            "validated_batches": outcome.validated_batches,
            "quarantined": [q.key for q in outcome.quarantined],
            "left_out": [b["key"] for b in outcome.left_out],
            "reasons": outcome.reasons,
        },
    )
    return _failures(failures)
