"""The trainer Lambda's feedback records: a file created under `feedback/` -> flywheel.jobs.feedback_arrival.process.

A bad file is quarantined and its message succeeds (retrying cannot fix it); S3 failing (or any fault) returns that
message as a batch item failure (retried, then dead-lettered), never the others. A direct S3 invocation has no
queue: the error is raised. Live quality is republished once per model after the files.

A file whose batch waits for captures still in flight is re-sent to the trainer's queue (FLYWHEEL_QUEUE_URL) as
the same S3 record marked CAPTURES_WAITED, delayed; that re-delivery comes back here and never waits again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from flywheel.feedback.labels import FEEDBACK_PREFIX
from flywheel.jobs.feedback_arrival import Arrival, process, refresh_quality
from flywheel.registry import registrations
from flywheel.settings import TrainerSettings
from lambdas.trainer import quality_metrics
from lambdas.trainer.delayed import send_later
from lambdas.trainer.events import CAPTURES_WAITED, Message, ObjectRef, notification

logger = Logger(service="flywheel-trainer", child=True)


def arrived(messages: list[Message], bucket: str) -> list[tuple[Message, ObjectRef]]:
    """The feedback files created in `bucket` that the messages name (folder markers left out)."""
    return [
        (m, o)
        for m in messages
        for o in m.objects
        if o.bucket == bucket
        and o.key.startswith(FEEDBACK_PREFIX)
        and not o.key.endswith("/")
        and o.event_name.startswith("ObjectCreated")
    ]


def _log(a: Arrival) -> None:
    extra: dict[str, Any] = {"file": a.key, "model": a.model, "status": a.status}
    if a.status == "quarantined":
        logger.warning("feedback file quarantined", extra={**extra, "quarantined_as": a.quarantine_key,
                                                            "problems": a.problems})  # fmt: skip
    elif a.status == "gone":
        logger.info("feedback file no longer there; nothing to do", extra=extra)
    elif a.waiting is not None:
        logger.info("feedback file processed; its batch waits for captures in flight", extra={
            **extra, "labelled": a.labelled, "redelivery_in_seconds": a.waiting})  # fmt: skip
    else:
        logger.info("feedback file processed", extra={**extra, "labelled": a.labelled, "train": a.train,
                                                      "batch": a.batch})  # fmt: skip


def _redeliver(settings: TrainerSettings, ref: ObjectRef) -> Any:
    """The `wait` of feedback_arrival.process: one delayed copy of the file's record on the trainer's queue."""

    def wait(seconds: float) -> bool:
        body = notification(ref, **{CAPTURES_WAITED: True})
        return send_later(settings.queue_url, body, seconds, what="feedback re-delivery")

    return wait


def handle(settings: TrainerSettings, s3: Any, messages: list[Message]) -> list[str]:
    """Process every feedback file the messages name, then republish each model's live quality once (not once
    per file: a sync of many files would recompute the join for each); returns the ids of the messages to retry.
    Any failure is one message's (or, for the republishing, that model's messages'), never the invocation's."""
    failed: list[str] = []
    by_model: dict[str, list[str | None]] = {}  # accepted files: model -> message ids
    inputs: dict[str, Any] = {}  # each model's captured inputs, read once for the invocation's files
    files = arrived(messages, settings.bucket)
    try:
        known = registrations.models(s3, settings) if files else {}  # the registered models, read once
    except Exception as e:  # S3 failing: every feedback message is retried, the data/ ones go on
        for m, _ in files:
            _failed(failed, m.message_id, e, "registered models unreadable; feedback messages will be retried")
        return failed
    for m, ref in files:
        if m.message_id in failed:
            continue
        try:
            wait = None if m.captures_waited else _redeliver(settings, ref)
            arrival = process(s3, settings, ref.key, wait=wait, cache=inputs, known=known)
        except Exception as e:  # S3 failing, or a fault nobody foresaw: this message only is retried
            _failed(failed, m.message_id, e, "feedback file could not be processed; the message will be retried",
                    file=ref.key)  # fmt: skip
            continue
        _log(arrival)
        if arrival.status == "accepted" and arrival.model is not None:
            by_model.setdefault(arrival.model, []).append(m.message_id)
    for model, ids in by_model.items():
        try:
            doc = refresh_quality(s3, settings, model, known[model])
        except Exception as e:
            for i in ids:  # published figures would stay stale: the files are processed again (idempotent)
                _failed(failed, i, e, "live quality could not be republished; the messages will be retried",
                        model=model)  # fmt: skip
            continue
        logger.info("live quality republished", extra={"model": model, "files": len(ids)})
        quality_metrics.emit(doc)  # the published live quality, as CloudWatch metrics (EMF)
    return failed


def _failed(failed: list[str], message_id: str | None, e: Exception, what: str, **extra: Any) -> None:
    logger.exception(what, extra=extra)
    if message_id is None:  # a direct S3 invocation has no queue to retry: Lambda's retry policy sees the error
        raise e
    if message_id not in failed:
        failed.append(message_id)
