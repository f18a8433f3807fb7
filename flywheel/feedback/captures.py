"""The capture format: one Parquet file per flush of a replica's captured predictions (docs/captures.md).

`captures/<model>/date=YYYY-MM-DD/<pod>-<seq>.parquet`, one row per predicted instance. The API replicas write
it (flywheel/serving/capture.py), the live-quality join and the feedback batches read it (`read`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.schema import Schema

CAPTURES_PREFIX = "captures/"


def arrow_schema(schema: Schema) -> pa.Schema:
    """The columns of a capture file of a model with this schema."""
    features = pa.struct(
        [pa.field(f.name, pa.float64() if f.type == "numeric" else pa.string()) for f in schema.features]
    )
    prediction = pa.float64() if schema.task == "regression" else pa.string()
    return pa.schema(
        [
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            pa.field("role", pa.string(), nullable=False),
            pa.field("captured_at", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("prediction", prediction),
            pa.field("probabilities", pa.list_(pa.float64())),
            pa.field("features", features),
        ]
    )


def capture_key(model: str, day: datetime, pod: str, seq: int, prefix: str = CAPTURES_PREFIX) -> str:
    return f"{prefix}{model}/date={day:%Y-%m-%d}/{pod}-{seq:06d}.parquet"


def day_of(key: str) -> str:
    """The `YYYY-MM-DD` of a capture key's `date=` partition ('' when it has none)."""
    for part in key.split("/"):
        if part.startswith("date="):
            return part[5:]
    return ""


def to_parquet(schema: Schema, columns: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """One file's bytes from column lists (the names of `arrow_schema`). `features` is a list of dicts, or a
    dict of column lists (the replicas' checked inputs; a NaN numeric input, a missing one, becomes null)."""
    target = arrow_schema(schema)
    features = columns["features"]
    if isinstance(features, dict):
        struct = target.field("features").type
        arrays = [pa.array(features[f.name], type=f.type, from_pandas=True) for f in struct]
        columns = {**columns, "features": pa.StructArray.from_arrays(arrays, fields=list(struct))}
    table = pa.Table.from_pydict(columns, schema=target)
    table = table.replace_schema_metadata({f"flywheel.{k}": v for k, v in metadata.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read(
    s3: Any, bucket: str, model: str, prefix: str = CAPTURES_PREFIX, keep: Callable[[str], bool] | None = None
) -> pa.Table | None:
    """Every capture of `model` (with `keep`, only the files whose key it keeps), as one table (None when there
    is none). Files of other schemas' shapes (a re-registered model) are concatenated with promotion."""
    tables = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}{model}/")
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet") and (keep is None or keep(obj["Key"])):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                tables.append(pq.read_table(io.BytesIO(body)))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def classes_of(table: pa.Table) -> list[str]:
    raw = (table.schema.metadata or {}).get(b"flywheel.classes")
    return list(json.loads(raw)) if raw else []
