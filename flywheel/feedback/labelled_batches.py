"""Labelled captures become training data: one feedback file's labels, joined with the captured inputs of the
predictions they label, written as a normal batch `data/<model>/feedback/<feedback file name>` (docs/captures.md).

The batch goes through the same path as any upload: the S3 notification, validation, quarantine when bad, the
training window, and the manifest's lineage, where its key (under `feedback/`) and its object metadata
(`source: feedback`, the feedback file, the rows joined) mark where it came from. Create-only: one batch per
feedback file, made once; a label whose prediction was never captured is left out and counted, and so is one whose
id was captured under more than one API key (ids are scoped to a key: such an id names no capture unambiguously).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from flywheel.data.uploads import put_new
from flywheel.feedback import captures
from flywheel.feedback.labels import ID_COLUMN, feedback_prefix, validate_feedback
from flywheel.names import data_prefix
from flywheel.schema import Schema
from flywheel.settings import CoreSettings

FEEDBACK_FOLDER = "feedback/"
AMBIGUOUS_SHOWN = 10  # ambiguous ids named in a report (all are counted)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackBatch:
    key: str | None  # the batch written; None when no label matched a captured prediction
    labelled: int  # labels in the feedback file
    joined: int  # rows written: labels whose prediction was captured
    unmatched: int
    ambiguous: int = 0  # labels of ids captured under more than one API key: joined nothing
    ambiguous_ids: list[str] = field(default_factory=list)  # the first AMBIGUOUS_SHOWN of them, sorted


def batch_key(settings: CoreSettings, model: str, feedback_key: str) -> str:
    """`feedback/<model>/<path>` -> `data/<model>/feedback/<path>`: sub-folders kept, so two files of the same
    name in different folders make two batches."""
    own = feedback_prefix(model)
    rest = feedback_key[len(own) :] if feedback_key.startswith(own) else feedback_key.rsplit("/", 1)[-1]
    return f"{data_prefix(settings, model)}{FEEDBACK_FOLDER}{rest}"


@dataclass(frozen=True)
class CapturedInputs:
    """A model's captured inputs, as labels join them."""

    inputs: pd.DataFrame  # the newest capture of every id captured by one key: `id` and one column per feature
    ambiguous: frozenset[str]  # ids captured under more than one API key: no label joins them


def inputs_of(s3: Any, bucket: str, model: str, schema: Schema) -> CapturedInputs:
    """The newest captured inputs of every prediction id, but for the ids captured under more than one API key
    (`captures.ambiguous`): those are set apart, their captures kept out of any join."""
    table = captures.read(s3, bucket, model)
    names = schema.feature_names
    if table is None:
        return CapturedInputs(pd.DataFrame(columns=[ID_COLUMN, *names]), frozenset())
    features = table.column("features").combine_chunks()
    frame = pd.DataFrame({n: features.field(n).to_pylist() for n in names})
    ids = table.column("prediction_id").to_pylist()
    frame.insert(0, ID_COLUMN, ids)
    shared = captures.ambiguous(ids, captures.keys_of(table)).to_numpy()
    frame = frame[~shared].assign(_at=table.column("captured_at").to_pandas()[~shared])
    newest = frame.sort_values("_at").drop_duplicates(ID_COLUMN, keep="last")
    return CapturedInputs(newest.drop(columns="_at"), frozenset(pd.Series(ids)[shared]))


@dataclass(frozen=True)
class Joined:
    """A feedback file's labels joined with the captured inputs of the predictions they label."""

    labelled: int  # labels in the feedback file
    rows: pd.DataFrame  # one row per label whose prediction was captured (by one key): `id`, the features, the target
    ambiguous_ids: list[str] = field(default_factory=list)  # labelled ids captured under several keys, sorted

    @property
    def ambiguous(self) -> int:
        return len(self.ambiguous_ids)

    @property
    def unmatched(self) -> int:
        """Labels of ids not captured (yet): waiting for captures in flight may still match them."""
        return self.labelled - len(self.rows) - self.ambiguous


def join_labels(
    s3: Any,
    settings: CoreSettings,
    model: str,
    schema: Schema,
    feedback_key: str,
    cache: dict[str, CapturedInputs] | None = None,
    labels: pd.DataFrame | None = None,
) -> Joined:
    """Join the labels of `feedback_key` (`labels` when the caller has already checked them, else read and
    re-checked here) with the captured inputs (read once per model for all the files of a trainer invocation
    when it passes a `cache`)."""
    if labels is None:
        body = s3.get_object(Bucket=settings.bucket, Key=feedback_key)["Body"].read()
        labels = validate_feedback(body, feedback_key, schema).to_pandas()
    captured = None if cache is None else cache.get(model)
    if captured is None:
        captured = inputs_of(s3, settings.bucket, model, schema)
        if cache is not None:
            cache[model] = captured
    joined = labels.merge(captured.inputs, on=ID_COLUMN, how="inner")
    ambiguous = sorted(str(i) for i in labels[ID_COLUMN] if i in captured.ambiguous)
    if ambiguous:  # a client may be planting inputs under another client's ids: worth an operator's look
        log.warning("%s: %d label(s) of %s joined nothing: their ids were captured under more than one API key",
                    model, len(ambiguous), feedback_key,
                    extra={"ambiguous_ids": ambiguous[:AMBIGUOUS_SHOWN]})  # fmt: skip
    return Joined(len(labels), joined, ambiguous)


def write_joined(
    s3: Any, settings: CoreSettings, model: str, schema: Schema, feedback_key: str, joined: Joined, *, uploaded_by: str
) -> FeedbackBatch:
    """Write the joined rows as the file's batch (create-only: BatchExists when it was made before)."""
    shown = joined.ambiguous_ids[:AMBIGUOUS_SHOWN]
    if joined.rows.empty:
        return FeedbackBatch(None, joined.labelled, 0, joined.unmatched, joined.ambiguous, shown)
    out = joined.rows[[*schema.feature_names, schema.target.name]].copy()
    for f in schema.features:
        if f.type == "numeric" and f.integer:  # whole numbers stay whole in the CSV ("25", not "25.0")
            out[f.name] = out[f.name].astype("Float64").round().astype("Int64")
    csv = out.to_csv(index=False).encode()
    key = batch_key(settings, model, feedback_key)
    rows = len(joined.rows)
    put_new(s3, settings.bucket, key, io.BytesIO(csv), via="flywheel-feedback",
            how_to_rename="this feedback file was already turned into a batch",
            metadata={"source": "feedback", "feedback-key": feedback_key, "labelled-rows": str(rows),
                      "uploaded-by": uploaded_by})  # fmt: skip
    return FeedbackBatch(key, joined.labelled, rows, joined.unmatched, joined.ambiguous, shown)


def write_batch(
    s3: Any,
    settings: CoreSettings,
    model: str,
    schema: Schema,
    feedback_key: str,
    *,
    uploaded_by: str,
    labels: pd.DataFrame | None = None,
) -> FeedbackBatch:
    """Join the labels of `feedback_key` (`labels` as the caller checked them, else re-read and re-checked) with
    the captured inputs and write the batch."""
    joined = join_labels(s3, settings, model, schema, feedback_key, labels=labels)
    return write_joined(s3, settings, model, schema, feedback_key, joined, uploaded_by=uploaded_by)
