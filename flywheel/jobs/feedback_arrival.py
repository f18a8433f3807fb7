"""A feedback file arrives under `feedback/<model>/`: check it, republish live quality, and, when the model's
policy says so, turn its labelled captures into a training batch (docs/captures.md, "Processing on arrival").

The trainer runs this for every ObjectCreated notification under `feedback/` (the Lambda in the cloud, the
worker of `flywheel up` locally), so a file uploaded around the CLI (`aws s3 cp`, the console) is handled like
one `flywheel feedback` sent. A file that is not a valid feedback file of a registered model is quarantined as a
bad batch is (flywheel/data/batch_store.py: the exact version copied, then taken out of `feedback/` only if it is still
the current object; with bucket versioning the original also stays as a noncurrent version), under
`quarantine/_feedback/<model>/<name>` with the report beside it in `<name>.error.json`. The `_` keeps these
apart from the batch quarantine `quarantine/<model>/`: a model name never starts with `_`.

API replicas flush their captures every FLYWHEEL_CAPTURE_FLUSH_SECONDS, so labels sent right after their
predictions may find some not captured yet. While the file is younger than FLYWHEEL_FEEDBACK_CAPTURE_WAIT_SECONDS
the batch waits: the caller's `wait` queues one delayed re-delivery of the notification, which makes the batch
with whatever matched by then. A file that is older, fully matched, re-delivered, or whose wait could not be
queued makes its batch at once (never lost).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
from botocore.exceptions import ClientError

from flywheel.data.batch_store import BatchStore
from flywheel.data.ingest import size_problem, unexpected_problem
from flywheel.data.uploads import BatchExists
from flywheel.errors import BatchRejected
from flywheel.feedback import quality_summary
from flywheel.feedback.labelled_batches import batch_key, join_labels, write_joined
from flywheel.feedback.labels import FEEDBACK_PREFIX, validate_feedback
from flywheel.feedback.policy import get_policy
from flywheel.registry import registrations
from flywheel.settings import TrainerSettings
from flywheel.storage import is_missing

QUARANTINE_FOLDER = "_feedback/"  # under the quarantine prefix; never a model's folder (names start a-z0-9)
#: the longest a re-delivery can be delayed (a queue's limit: SQS allows 15 minutes)
MAX_DELAY_SECONDS = 900

log = logging.getLogger(__name__)

Status = Literal["accepted", "quarantined", "gone"]
#: queues one delayed re-delivery of the file's notification after this many seconds; True when queued
Wait = Callable[[float], bool]


@dataclass
class Arrival:
    """What became of one feedback file. `gone`: the object (that version) was no longer there to process."""

    key: str
    model: str | None
    status: Status
    labelled: int = 0  # labels in the file (accepted files only)
    problems: list[dict[str, Any]] = field(default_factory=list)
    quarantine_key: str | None = None
    train: bool = False  # the model's feedback policy at the time
    #: {"key", "created", "rows", "unmatched", "ambiguous", "ambiguous_ids"} when the policy says train
    batch: dict[str, Any] | None = None
    waiting: int | None = None  # seconds until the re-delivery, when the batch waits for captures in flight


def model_of_feedback_key(key: str) -> str | None:
    """`feedback/<model>/<name>` -> model; None for a file directly under `feedback/`."""
    rest = key[len(FEEDBACK_PREFIX) :]
    return rest.split("/", 1)[0] if "/" in rest else None


def quarantine_key(settings: TrainerSettings, key: str) -> str:
    """Where the bad feedback file `key` is kept (its report: this + `.error.json`)."""
    return settings.quarantine_prefix + QUARANTINE_FOLDER + key[len(FEEDBACK_PREFIX) :]


def _store(s3: Any, settings: TrainerSettings) -> BatchStore:
    return BatchStore(s3, settings.bucket, FEEDBACK_PREFIX, settings.quarantine_prefix + QUARANTINE_FOLDER)


def _quarantine(
    s3: Any, settings: TrainerSettings, rejected: BatchRejected, model: str | None, etag: str, version_id: str | None
) -> Arrival:
    log.warning("feedback file quarantined: %s", rejected.message,
                extra={"file": rejected.key, "model": model, "problems": rejected.problems})  # fmt: skip
    q = _store(s3, settings).quarantine(rejected, etag=etag, version_id=version_id)
    if q is None:  # that version is gone: a newer upload under the name has its own notification
        return Arrival(rejected.key, model, "gone")
    return Arrival(rejected.key, model, "quarantined", problems=rejected.problems, quarantine_key=q.quarantine_key)


def _unrouted(s3: Any, settings: TrainerSettings, key: str, model: str | None, known: list[str]) -> Arrival:
    try:
        head = s3.head_object(Bucket=settings.bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return Arrival(key, model, "gone")
        raise
    where = f"upload under {FEEDBACK_PREFIX}<model>/ (flywheel feedback FILE --model NAME)"
    message = (
        f"{model!r} is not a registered model (registered: {known}); {where}"
        if model
        else f"a feedback file names its model by its folder (registered: {known}); {where}"
    )
    rejected = BatchRejected(key, [{"check": "model", "message": message}])
    return _quarantine(s3, settings, rejected, model, head["ETag"].strip('"'), head.get("VersionId"))


def _checked(
    s3: Any, settings: TrainerSettings, key: str, model: str, schema: Any
) -> Arrival | tuple[pd.DataFrame, float]:
    """The file's labels (checked) and its age in seconds, or its Arrival when it is gone or quarantined."""
    try:
        got = s3.get_object(Bucket=settings.bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return Arrival(key, model, "gone")
        raise
    etag, version_id, limit = got["ETag"].strip('"'), got.get("VersionId"), settings.batch_limit_bytes
    rejected: BatchRejected | None = None
    if got["ContentLength"] > limit:
        got["Body"].close()
        rejected = size_problem({"Key": key, "Size": got["ContentLength"]}, limit)
    else:
        try:
            labels = validate_feedback(got["Body"].read(), key, schema).to_pandas()
            return labels, (datetime.now(UTC) - got["LastModified"]).total_seconds()
        except BatchRejected as e:
            rejected = e
        except (MemoryError, OSError):
            raise  # the machine failed, not the file: the delivery is retried
        except Exception as e:  # as for a batch (flywheel/data/ingest.py): a file must never stop the trainer
            log.exception("unexpected error validating %s", key)
            rejected = unexpected_problem(key, e)
    return _quarantine(s3, settings, rejected, model, etag, version_id)


def _exists(s3: Any, settings: TrainerSettings, key: str) -> bool:
    try:
        s3.head_object(Bucket=settings.bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return False
        raise
    return True


def _batch(
    s3: Any,
    settings: TrainerSettings,
    model: str,
    schema: Any,
    key: str,
    labels: pd.DataFrame,
    by: str | None,
    age: float,
    wait: Wait | None,
    cache: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, int | None]:
    """Write the file's labelled captures as a batch; one already made (by `flywheel feedback --train`, or an
    earlier delivery of this notification) is left as it is. (None, seconds) when it waits for captures."""
    name = batch_key(settings, model, key)
    joined = join_labels(s3, settings, model, schema, key, cache, labels)  # the labels as checked: no second read
    left = settings.feedback_capture_wait_seconds - age
    if joined.unmatched and wait is not None and left > 0 and not _exists(s3, settings, name):
        delay = max(1, min(MAX_DELAY_SECONDS, math.ceil(left)))
        if wait(delay):
            return None, delay
        log.warning("could not queue the wait for captures; the batch is made now", extra={"file": key})
    try:
        by_whom = f"trainer (feedback policy set by {by})"
        made = write_joined(s3, settings, model, schema, key, joined, uploaded_by=by_whom)
    except BatchExists:
        return {"key": name, "created": False, "rows": None, "unmatched": None, "ambiguous": None,
                "ambiguous_ids": None}, None  # fmt: skip
    # labels of ids captured under more than one API key joined nothing (docs/captures.md, "Ids and keys")
    shared = {"ambiguous": made.ambiguous, "ambiguous_ids": made.ambiguous_ids}
    if made.key is None:  # no label matched a captured prediction (yet): nothing to train on
        return {"key": None, "created": False, "rows": 0, "unmatched": made.unmatched, **shared}, None
    return {"key": made.key, "created": True, "rows": made.joined, "unmatched": made.unmatched, **shared}, None


def refresh_quality(s3: Any, settings: TrainerSettings, model: str, schema: Any) -> dict[str, Any]:
    """Recompute and publish `model`'s live quality (never over figures another trainer published since)."""
    return quality_summary.refresh(s3, settings.bucket, model, schema, models_prefix=settings.models_prefix)


def process(
    s3: Any,
    settings: TrainerSettings,
    key: str,
    *,
    wait: Wait | None = None,
    cache: dict[str, Any] | None = None,
    known: dict[str, Any] | None = None,
) -> Arrival:
    """Handle one object created under `feedback/`. Raises only what a retry should see (S3 failing).
    Live quality is not republished here: the caller does it once for all the files of a model (refresh_quality).
    `wait`: how to queue a delayed re-delivery (None: the batch never waits, as on a re-delivery). `cache`: the
    captured inputs per model, and `known`: the registered models, both read once for the files of an invocation
    (None: read here)."""
    model = model_of_feedback_key(key)
    known = registrations.models(s3, settings) if known is None else known
    if model is None or model not in known:
        return _unrouted(s3, settings, key, model, sorted(known))
    schema = known[model]
    checked = _checked(s3, settings, key, model, schema)
    if isinstance(checked, Arrival):
        return checked
    labels, age = checked
    policy = get_policy(s3, settings.bucket, model, settings.models_prefix)
    batch, waiting = (
        _batch(s3, settings, model, schema, key, labels, policy.by, age, wait, cache) if policy.train else (None, None)
    )
    return Arrival(key, model, "accepted", labelled=len(labels), train=policy.train, batch=batch,
                   waiting=waiting)  # fmt: skip
