"""Trainer events: SQS messages whose bodies are S3 notifications, or a direct S3 event."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

#: The body of a message the trainer sends itself when another trainer holds the lock: "retrain later".
RETRAIN_EVENT = "flywheel:Retrain"
#: Set in an S3 notification the trainer re-sends itself for a feedback file that waited for captures.
CAPTURES_WAITED = "flywheel:capturesWaited"


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    event_name: str
    version_id: str | None = None


@dataclass
class Message:
    """One SQS message (or the whole direct S3 event, message_id None) and the objects it names."""

    message_id: str | None
    objects: list[ObjectRef] = field(default_factory=list)
    test_event: bool = False
    retrain_requested: bool = False  # a delayed retry the trainer sent itself (RETRAIN_EVENT)
    requested_model: str | None = None  # which model that retry is for (None: the default model)
    captures_waited: bool = False  # a feedback file's re-delivery after waiting for captures (CAPTURES_WAITED)
    error: str | None = None


def _s3_records(doc: dict[str, Any]) -> list[ObjectRef]:
    refs = []
    for rec in doc.get("Records", []):
        if rec.get("eventSource") != "aws:s3" or "s3" not in rec:
            continue
        s3 = rec["s3"]
        refs.append(
            ObjectRef(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(s3["object"]["key"]),  # S3 URL-encodes keys in notifications
                event_name=rec.get("eventName", ""),
                version_id=s3["object"].get("versionId"),
            )
        )
    return refs


def notification(ref: ObjectRef, **extra: Any) -> dict[str, Any]:
    """An S3 notification body naming `ref` again (what `_s3_records` reads back), plus `extra` keys."""
    obj: dict[str, Any] = {"key": quote_plus(ref.key)}
    if ref.version_id:
        obj["versionId"] = ref.version_id
    s3 = {"bucket": {"name": ref.bucket}, "object": obj}
    record = {"eventSource": "aws:s3", "eventName": ref.event_name, "s3": s3}
    return {"Records": [record], **extra}


def parse_event(event: dict[str, Any]) -> list[Message]:
    """Split an invocation into messages; a body that is not an S3 notification is an error message."""
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:s3":
        return [Message(message_id=None, objects=_s3_records(event))]
    messages = []
    for rec in records:
        msg = Message(message_id=rec.get("messageId"))
        try:
            body = json.loads(rec.get("body") or "")
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
            if body.get("Event") == "s3:TestEvent":
                msg.test_event = True
            elif body.get("Event") == RETRAIN_EVENT:
                msg.retrain_requested = True
                model = body.get("model")
                msg.requested_model = model if isinstance(model, str) and model else None
            else:
                msg.objects = _s3_records(body)
                msg.captures_waited = body.get(CAPTURES_WAITED) is True
        except (ValueError, KeyError, TypeError) as e:
            msg.error = f"not an S3 notification: {e}"
        messages.append(msg)
    return messages


def relevant(messages: list[Message], data_prefix: str) -> list[ObjectRef]:
    """Objects under data/ that were created or removed (what can change the training set)."""
    return [
        o
        for m in messages
        for o in m.objects
        if o.key.startswith(data_prefix) and o.event_name.startswith(("ObjectCreated", "ObjectRemoved"))
    ]
