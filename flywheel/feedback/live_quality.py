"""Live quality: captured predictions joined with their delayed labels, per version and per day (docs/captures.md).

The join is on `prediction_id` == `id`. Labels come from every valid file under `feedback/<model>/`; a bad
file is skipped and reported, never fatal. An id labelled in several files takes the label of the newest file
(S3 LastModified, then key); an id captured more than once joins its newest capture, unless it was captured
under more than one API key: ids are scoped to the key that made them, so such an id joins nothing and is reported
as ambiguous. The gate's holdout score of each version (from its manifest) is returned beside the live figures so
they can be compared.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import date
from typing import Any

import pandas as pd
from botocore.exceptions import ClientError
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, r2_score

from flywheel.errors import BatchRejected, NotFound
from flywheel.feedback import captures
from flywheel.feedback.labels import FEEDBACK_PREFIX, ID_COLUMN, feedback_prefix, validate_feedback
from flywheel.registry.store import Registry
from flywheel.schema import Schema
from flywheel.storage import is_missing
from flywheel.training.gate import PRIMARY_METRIC

UNMATCHED_SHOWN = 10

# name -> (sklearn function, fewest labelled predictions it is defined for)
Metric = tuple[Callable[..., Any], int]
METRICS: dict[str, dict[str, Metric]] = {
    "regression": {"r2": (r2_score, 2), "mae": (mean_absolute_error, 1)},
    "classification": {"accuracy": (accuracy_score, 1), "balanced_accuracy": (balanced_accuracy_score, 1)},
}


def figures(task: str, y_true: Any, y_pred: Any) -> dict[str, Any]:
    """`n` and each live metric of `task` (None when n is too small for it), as sklearn computes them."""
    n = len(y_true)
    out: dict[str, Any] = {"n": n}
    for name, (fn, least) in METRICS[task].items():
        if n < least:
            out[name] = None
            continue
        with warnings.catch_warnings():  # a class predicted but never labelled: sklearn warns, the figure stands
            warnings.simplefilter("ignore", UserWarning)
            out[name] = float(fn(y_true, y_pred))
    return out


def labels(
    s3: Any, bucket: str, model: str, schema: Schema, prefix: str = FEEDBACK_PREFIX
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every valid label of `model`, one per id (newest file wins): columns `id`, `label`, `file`; and what
    was found on the way: files read, label rows, ids relabelled by a newer file, files skipped (reports)."""
    objects = [
        o
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=feedback_prefix(model, prefix))
        for o in page.get("Contents", [])
        if not o["Key"].endswith("/")
    ]
    objects.sort(key=lambda o: (o["LastModified"], o["Key"]))  # oldest first: later rows win below
    frames, skipped = [], []
    for order, obj in enumerate(objects):
        try:
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        except ClientError as e:
            if is_missing(e):
                continue  # quarantined or deleted since the listing
            raise
        try:
            table = validate_feedback(body, obj["Key"], schema)
        except BatchRejected as e:
            skipped.append(e.to_dict())
            continue
        except (MemoryError, OSError):
            raise
        except Exception as e:  # a file nobody foresaw must not stop the join: skipped, reported as such
            message = f"validation failed unexpectedly: {type(e).__name__}: {e}"[:500]
            skipped.append(BatchRejected(obj["Key"], [{"check": "internal", "message": message}]).to_dict())
            continue
        frame = pd.DataFrame(
            {
                "id": table.column(ID_COLUMN).to_pylist(),
                "label": table.column(schema.target.name).to_pylist(),
                "file": obj["Key"],
                "order": order,
            }
        )
        frames.append(frame)
    every = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "label", "file", "order"])
    relabelled = int(every["id"].value_counts().gt(1).sum())  # a file holds an id once: these span files
    newest = every.sort_values("order", kind="stable").drop_duplicates("id", keep="last")
    found = {"files": len(frames), "rows": len(every), "relabelled": relabelled, "skipped": skipped}
    return newest[["id", "label", "file"]].reset_index(drop=True), found


def _captured(s3: Any, bucket: str, model: str, prefix: str, since: date | None = None) -> pd.DataFrame:
    """One row per captured id (the newest capture of it): id, version, day, prediction, and `ambiguous` (the id
    was captured under more than one API key); with `since`, only the capture files of that UTC day and later
    (their `date=` partition)."""
    keep = None if since is None else (lambda key: captures.day_of(key) >= since.isoformat())
    table = captures.read(s3, bucket, model, prefix, keep=keep)
    if table is None:
        return pd.DataFrame(columns=["id", "version", "captured_at", "day", "prediction", "ambiguous"])
    ids = table.column("prediction_id").to_pylist()
    frame = pd.DataFrame(
        {
            "id": ids,
            "version": table.column("version").to_numpy(),
            "captured_at": table.column("captured_at").to_pandas(),
            "prediction": table.column("prediction").to_pylist(),
            "ambiguous": captures.ambiguous(ids, captures.keys_of(table)).to_numpy(),
        }
    )
    frame["day"] = frame["captured_at"].dt.strftime("%Y-%m-%d")
    frame = frame.sort_values("captured_at", kind="stable").drop_duplicates("id", keep="last")
    return frame[frame["prediction"].notna()]


def _holdout(registry: Registry, version: int) -> dict[str, Any]:
    try:
        manifest = registry.manifest(version)
    except NotFound:
        return {"metric": None, "score": None}
    metric = (manifest.get("gate") or {}).get("primary_metric")  # an older or partial manifest: no score
    score = ((manifest.get("metrics") or {}).get("candidate") or {}).get(metric) if metric else None
    return {"metric": metric, "score": None if score is None else float(score)}


def live_quality(
    s3: Any,
    bucket: str,
    model: str,
    schema: Schema,
    *,
    models_prefix: str = "models/",
    captures_prefix: str = captures.CAPTURES_PREFIX,
    feedback_prefix: str = FEEDBACK_PREFIX,
    since: date | None = None,
) -> dict[str, Any]:
    """Live quality of every captured version of `model`: holdout score, live figures overall and per day
    (UTC day of `captured_at`), each with `n`; plus the labels' bookkeeping (unmatched, relabelled, ambiguous:
    labelled ids captured under more than one API key, which join nothing; skipped).
    With `since`, only predictions captured on that UTC day or later count (a trailing window)."""
    task = schema.task
    got, found = labels(s3, bucket, model, schema, feedback_prefix)
    seen = _captured(s3, bucket, model, captures_prefix, since)
    shared = seen["ambiguous"].astype(bool)
    joined = seen[~shared].merge(got, on="id", how="inner")
    unmatched = got[~got["id"].isin(seen["id"])]["id"]
    ambiguous = got[got["id"].isin(seen.loc[shared, "id"])]["id"]
    registry = Registry(s3, bucket, model, models_prefix)
    versions = []
    for version in sorted(int(v) for v in seen["version"].unique()):
        mine, captured = joined[joined["version"] == version], int((seen["version"] == version).sum())
        days = [
            {"day": day, **figures(task, part["label"].tolist(), part["prediction"].tolist())}
            for day, part in mine.groupby("day", sort=True)
        ]
        versions.append(
            {
                "version": version,
                "captured": captured,
                "holdout": _holdout(registry, version),
                "live": figures(task, mine["label"].tolist(), mine["prediction"].tolist()),
                "days": days,
            }
        )
    return {
        "model": model,
        "task": task,
        "primary_metric": PRIMARY_METRIC[task],
        "versions": versions,
        "labels": {
            "files": found["files"],
            "rows": found["rows"],
            "ids": len(got),
            "matched": len(joined),
            "unmatched": len(unmatched),
            "unmatched_ids": sorted(unmatched.astype(str))[:UNMATCHED_SHOWN],
            "relabelled": found["relabelled"],
            "ambiguous": len(ambiguous),
            "ambiguous_ids": sorted(ambiguous.astype(str))[:UNMATCHED_SHOWN],
        },
        "skipped": found["skipped"],
    }
