"""Trainer Lambda: SQS (S3 notifications) -> one retrain per model per invocation -> partial batch failures.

Thin by design: parse the event, decide where the retrain runs (here, or handed to bigger compute when it
will not fit), call flywheel.jobs.retrain.retrain, report. The local worker of `flywheel up` calls this same
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

from flywheel.data.ingest import quarantine_unrouted
from flywheel.errors import FlywheelError, LockBusy
from flywheel.jobs.retrain import Outcome, retrain
from flywheel.names import model_of_batch_key
from flywheel.registry import registrations
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.training.capacity import plan
from lambdas.trainer import feedback, offload
from lambdas.trainer.events import Message, parse_event, relevant

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
    # production's signature did not verify: nothing of it was loaded and the gate compared against the baseline
    metrics.add_metric(name="ProductionUnverified", unit=MetricUnit.Count, value=int(outcome.production_unverified))
    # the MLflow mirror stopped (down, slow, refusing): the retrain went on; the next event or `mlflow sync` repairs
    metrics.add_metric(name="MlflowMirrorFailed", unit=MetricUnit.Count, value=int(outcome.mlflow.startswith("failed")))
    primary = outcome.metrics.get("primary_metric")
    if primary:
        metrics.add_metric(name="HoldoutScore", unit=MetricUnit.NoUnit, value=outcome.metrics["candidate"][primary])
        if outcome.metrics.get("production"):
            value = outcome.metrics["production"][primary]
            metrics.add_metric(name="ProductionHoldoutScore", unit=MetricUnit.NoUnit, value=value)


def _seconds_left(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else DEFAULT_SECONDS


def _handed_off(settings: TrainerSettings, name: str, context: Any, seconds_left: float) -> bool:
    """True when model `name`'s retrain was sent to bigger compute. Raises LockBusy while another trainer runs."""
    registry = Registry(_s3(), settings.bucket, name, settings.models_prefix)
    held = registry.lock_doc()
    if held is not None and held.get("expires_at", 0) > time.time():
        raise LockBusy(f"another trainer holds the lock ({held.get('owner')})", expires_at=held.get("expires_at"))
    # an expired lock of a Lambda run means that run died (timeout, out of memory): do not try it here again
    died = held is not None and str(held.get("owner", "")).startswith("lambda@")
    memory_mb = int(getattr(context, "memory_limit_in_mb", 0) or 0)
    memory = memory_mb * 1024 * 1024 if memory_mb else settings.memory_bytes
    p = plan(settings, _s3(), model=name, seconds_left=seconds_left, memory_bytes=memory)
    if p.nothing_new or (p.fits and not died):
        return False
    reason = "; ".join(p.reasons) or "the previous Lambda run did not finish (timeout or out of memory)"
    # claim the lock for the job, so no second job starts before it does; the job adopts the claim
    token = registry.claim("handoff", settings.offload_lock_seconds)
    try:
        started = offload.submit(settings, model=name, reason=reason, lock_token=token)
    except Exception:
        registry.release(token)
        raise
    logger.info("retrain handed off", extra={"model": name, "plan": p.to_dict(), "reason": reason, "started": started})
    metrics.add_metric(name="HandedOff", unit=MetricUnit.Count, value=1)
    return True


def _busy(settings: TrainerSettings, name: str, e: LockBusy, keys: list[str]) -> bool:
    """Lock held: one delayed retry message instead of failed deliveries (which would count towards the DLQ)."""
    expires_at = e.detail.get("expires_at")
    if offload.retry_later(settings, model=name, keys=keys, expires_at=expires_at, reason=e.message):
        logger.info("another trainer is running; a delayed retrain was queued", extra={"model": name})
        return True
    logger.warning("another trainer is running; messages will be retried", extra={"model": name, "error": e.message})
    return False


def _failures(ids: list[str]) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(ids)]}


def _models_of(m: Message, settings: TrainerSettings) -> set[str]:
    names = {model_of_batch_key(o.key, settings) for o in m.objects}
    if m.retrain_requested:
        names.add(m.requested_model or settings.model_name)
    return {n for n in names if n}


def _route(settings: TrainerSettings, messages: list[Message]) -> dict[str, list[str]]:
    """{model: keys} to retrain; a new batch for no registered model is quarantined, naming the registered ones."""
    known = registrations.models(_s3(), settings)
    out: dict[str, list[str]] = {}
    for ref in relevant(messages, settings.data_prefix):
        if ref.bucket != settings.bucket:
            continue
        name = model_of_batch_key(ref.key, settings) or ""
        if name in known:
            out.setdefault(name, []).append(ref.key)
        elif ref.event_name.startswith("ObjectCreated"):
            q = quarantine_unrouted(_s3(), settings, ref.key, name, sorted(known))
            if q:
                logger.warning("batch for no registered model quarantined", extra={"file": ref.key, "model": name})
    for m in messages:
        if m.retrain_requested:
            out.setdefault(m.requested_model or settings.model_name, [])
    return {name: sorted(set(keys)) for name, keys in out.items()}


def _retrain_one(settings: TrainerSettings, name: str, keys: list[str], context: Any) -> None:
    """One model's retrain (here, or handed off). Raises what a retry should see."""
    seconds_left = _seconds_left(context)
    logger.info("retraining", extra={"model": name, "keys": keys})
    if settings.offload != "none" and _handed_off(settings, name, context, seconds_left):
        return
    outcome = retrain(settings, _s3(), model=name, actor="lambda", deadline=time.time() + seconds_left)
    _emit(outcome)
    logger.info(
        "retrain finished",
        extra={
            "model": name,
            "status": outcome.status,
            "version": outcome.version,
            "production_version": outcome.production_version,
            "rows": outcome.rows,
            "duration_seconds": outcome.duration_seconds,
            "timings": outcome.timings,
            "mlflow": outcome.mlflow,
            "validated_batches": outcome.validated_batches,
            "quarantined": [q.key for q in outcome.quarantined],
            "left_out": [b["key"] for b in outcome.left_out],
            "reasons": outcome.reasons,
        },
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One retrain per model named in the records, each under its own lock; one model's failure never blocks
    another's. Failed messages (those naming a model whose retrain failed) go back to the queue (then the DLQ)."""
    settings = _settings()
    messages = parse_event(event)
    failures = [m.message_id for m in messages if m.error and m.message_id]
    for m in messages:
        if m.error:
            logger.error("unreadable message", extra={"message_id": m.message_id, "error": m.error})
        elif m.test_event:
            logger.info("ignoring s3:TestEvent", extra={"message_id": m.message_id})
    # files under feedback/ are labels, not batches: checked, live quality republished (lambdas/trainer/feedback.py)
    failures += feedback.handle(settings, _s3(), messages)
    if not relevant(messages, settings.data_prefix) and not any(m.retrain_requested for m in messages):
        return _failures(failures)
    direct = bool(messages) and messages[0].message_id is None
    try:
        work = _route(settings, messages)
    except (FlywheelError, ClientError, BotoCoreError):
        logger.exception("could not route the records to models")
        if direct:
            raise
        return _failures(failures + [m.message_id for m in messages if m.message_id and _models_of(m, settings)])
    failed: set[str] = set()
    errors: list[Exception] = []
    for name, keys in work.items():
        try:
            _retrain_one(settings, name, keys, context)
        except LockBusy as e:
            if direct or not _busy(settings, name, e, keys):
                failed.add(name)
                errors.append(e)
        except (FlywheelError, ClientError, BotoCoreError) as e:
            logger.exception("retrain failed", extra={"model": name})
            failed.add(name)
            errors.append(e)
    if direct and errors:
        raise errors[0]  # a direct S3 invocation has no queue to retry: let Lambda's retry policy see the error
    failures += [m.message_id for m in messages if m.message_id and _models_of(m, settings) & failed]
    return _failures(failures)
