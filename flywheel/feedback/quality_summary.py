"""The published live quality of a model: `models/<model>/live-quality.json` (docs/captures.md, "Live quality").

Computed where labels arrive (the trainer, on each feedback file: flywheel/jobs/feedback_arrival.py), read by the
API replicas (Prometheus gauges), the trainer's CloudWatch figures and the scheduled judge (the alarm's count).
One figure per version: the gate's
primary metric (R² for regression, balanced accuracy for classification) over the predictions captured in the
last `window_days` UTC days that have a label, beside the gate's holdout score of that version. The alert
(monitoring/prometheus/rules.yaml, the stack's CloudWatch alarm) fires when a version with at least
`min_labelled` labelled predictions scores below its holdout score by more than `tolerance`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from flywheel.errors import ConflictError
from flywheel.feedback.captures import CAPTURES_PREFIX
from flywheel.feedback.labels import FEEDBACK_PREFIX
from flywheel.registry.store import Registry
from flywheel.schema import Schema
from flywheel.storage import is_missing, is_not_modified, is_precondition_failed

SUMMARY_FILE = "live-quality.json"
WINDOW_DAYS = 7  # the trailing window of captured predictions a live figure covers
MIN_LABELLED = 100  # fewer labelled predictions than this: shown, never alerted on
TOLERANCE = 0.05  # live below holdout by more than this (absolute, in the metric's units) is a shortfall


def summary_key(model: str, models_prefix: str = "models/") -> str:
    return f"{models_prefix}{model}/{SUMMARY_FILE}"


def summarize(report: dict[str, Any], *, window_days: int = WINDOW_DAYS, now: float | None = None) -> dict[str, Any]:
    """The published document from a `live_quality` report: per version the live primary metric, the holdout
    score, the labelled predictions behind the live figure and the shortfall (holdout - live; None when either
    is unknown)."""
    metric = report["primary_metric"]
    versions = []
    for v in report["versions"]:
        live, holdout = v["live"].get(metric), v["holdout"]["score"]
        if v["holdout"]["metric"] not in (None, metric):
            holdout = None  # a version gated on another metric: nothing to compare with
        shortfall = None if live is None or holdout is None else holdout - live
        versions.append({"version": v["version"], "live": live, "holdout": holdout, "labelled": v["live"]["n"],
                         "captured": v["captured"], "shortfall": shortfall})  # fmt: skip
    return {
        "model": report["model"],
        "task": report["task"],
        "metric": metric,
        "window_days": window_days,
        "min_labelled": MIN_LABELLED,
        "tolerance": TOLERANCE,
        "computed_at": time.time() if now is None else now,
        "versions": versions,
    }


def below_holdout(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The versions whose live figure is short of their holdout score beyond the tolerance, enough labels behind."""
    return [
        v
        for v in doc["versions"]
        if v["shortfall"] is not None and v["labelled"] >= doc["min_labelled"] and v["shortfall"] > doc["tolerance"]
    ]


def short_in_production(s3: Any, bucket: str, model: str, models_prefix: str = "models/") -> int:
    """1 when the version `model` serves in production is short of its holdout score in the published document
    (`below_holdout`), else 0: what the scheduled judge reports each minute, for the cloud's alarm."""
    doc, _, _ = load(s3, bucket, model, models_prefix)
    alias = None if doc is None else Registry(s3, bucket, model, models_prefix).alias()
    if doc is None or alias is None:
        return 0
    return int(any(v["version"] == alias.version for v in below_holdout(doc)))


def compute(
    s3: Any,
    bucket: str,
    model: str,
    schema: Schema,
    *,
    window_days: int = WINDOW_DAYS,
    now: float | None = None,
    models_prefix: str = "models/",
    captures_prefix: str = CAPTURES_PREFIX,
    feedback_prefix: str = FEEDBACK_PREFIX,
) -> dict[str, Any]:
    """Live quality over the trailing window, summarized (not published)."""
    from flywheel.feedback.live_quality import (
        live_quality,  # scikit-learn's metrics: only where the join runs, not in replicas
    )

    at = time.time() if now is None else now
    since = (datetime.fromtimestamp(at, UTC) - timedelta(days=window_days - 1)).date()
    report = live_quality(s3, bucket, model, schema, models_prefix=models_prefix, captures_prefix=captures_prefix,
                          feedback_prefix=feedback_prefix, since=since)  # fmt: skip
    return summarize(report, window_days=window_days, now=at)


def publish(s3: Any, bucket: str, doc: dict[str, Any], models_prefix: str = "models/") -> str:
    """Write the document (replacing the previous one); returns its key."""
    key = summary_key(doc["model"], models_prefix)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=2).encode(), ContentType="application/json")
    return key


def publish_over(s3: Any, bucket: str, doc: dict[str, Any], etag: str | None, models_prefix: str = "models/") -> bool:
    """Compare-and-swap write: replace only the version with `etag` (None: only create). False when someone
    published in between (figures computed later than these)."""
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(Bucket=bucket, Key=summary_key(doc["model"], models_prefix),
                      Body=json.dumps(doc, indent=2).encode(), ContentType="application/json", **cond)  # fmt: skip
    except ClientError as e:
        if is_precondition_failed(e) or is_missing(e):  # 412/409, or deleted under an If-Match
            return False
        raise
    return True


def refresh(
    s3: Any, bucket: str, model: str, schema: Schema, *, models_prefix: str = "models/", attempts: int = 3,
    **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    """Compute and publish, never over newer figures: the document's ETag is read before the labels are, and
    the write replaces only that version. A lost race: when the winner computed after this call began, its
    figures include every label this call saw, and they are returned as they are; otherwise this recomputes.
    Raises ConflictError when every attempt lost (the caller's messages are retried)."""
    began = time.time()
    for _ in range(attempts):
        _, etag, _ = load(s3, bucket, model, models_prefix)
        doc = compute(s3, bucket, model, schema, models_prefix=models_prefix, **kwargs)
        if publish_over(s3, bucket, doc, etag, models_prefix):
            return doc
        newer, _, _ = load(s3, bucket, model, models_prefix)
        if newer is not None and float(newer.get("computed_at", 0)) >= began:
            return newer
    raise ConflictError(f"{model}: live quality not published: {attempts} newer writes in a row won the race")


def load(
    s3: Any, bucket: str, model: str, models_prefix: str = "models/", etag: str | None = None
) -> tuple[dict[str, Any] | None, str | None, bool]:
    """(document, etag, changed): a conditional GET when `etag` is given. No document: (None, None, changed),
    changed only when a document known by `etag` has gone."""
    extra = {"IfNoneMatch": etag} if etag else {}
    try:
        got = s3.get_object(Bucket=bucket, Key=summary_key(model, models_prefix), **extra)
    except ClientError as e:
        if is_not_modified(e):
            return None, etag, False
        if is_missing(e):
            return None, None, etag is not None
        raise
    return json.loads(got["Body"].read()), got.get("ETag"), True
