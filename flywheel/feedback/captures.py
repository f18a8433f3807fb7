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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.schema import Schema

CAPTURES_PREFIX = "captures/"
#: The id of the API key that made the request (flywheel/access/api_keys.py: `KeyRecord.id`, never the key itself);
#: null when the API ran without keys, or in a file older than the column (docs/captures.md, "Ids and keys").
KEY_COLUMN = "key_id"


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
            pa.field(KEY_COLUMN, pa.string()),  # last: files without it (older ones) are read alike
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
    dict of column lists (the replicas' checked inputs; a NaN numeric input, a missing one, becomes null).
    Without `key_id` the rows have no key (null)."""
    target = arrow_schema(schema)
    if KEY_COLUMN not in columns:
        columns = {**columns, KEY_COLUMN: pa.nulls(len(columns["prediction_id"]), pa.string())}
    features = columns["features"]
    if isinstance(features, dict):
        struct = target.field("features").type
        arrays = [pa.array(features[f.name], type=f.type, from_pandas=True) for f in struct]
        columns = {**columns, "features": pa.StructArray.from_arrays(arrays, fields=list(struct))}
    table = pa.Table.from_pydict(columns, schema=target)
    table = table.replace_schema_metadata({f"flywheel.{k}": v for k, v in metadata.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=dictionary_columns(target))
    return buf.getvalue()


def dictionary_columns(target: pa.Schema) -> list[str]:
    """The string columns but the ids, nested features included: a few distinct values each (the model, the role,
    a category, a key id), where a dictionary pays. Numbers and ids are nearly all distinct: a dictionary there
    is built and then given up, which took half of a flush's time (20k rows: 20.3 ms with a dictionary for every
    column, 10.5 ms with these only, and a file of 1.74 MB instead of 2.11)."""
    found = []
    for field in target:
        if pa.types.is_struct(field.type):
            found += [f"{field.name}.{sub.name}" for sub in field.type if pa.types.is_string(sub.type)]
        elif pa.types.is_string(field.type) and field.name != "prediction_id":
            found.append(field.name)
    return found


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


def keys_of(table: pa.Table) -> list[str | None]:
    """The `key_id` of every row (None throughout for files older than the column)."""
    if KEY_COLUMN not in table.column_names:
        return [None] * table.num_rows
    return table.column(KEY_COLUMN).to_pylist()


def ambiguous(ids: Any, keys: Any) -> pd.Series:
    """Per row: is its id captured under more than one key in these rows? Ids are scoped to the key that made
    them, so such an id names no capture unambiguously and a label of it joins nothing (docs/captures.md, "Ids and
    keys"). No key (null: API auth off, or an older file) counts as one key of its own."""
    frame = pd.DataFrame({"id": ids, "key": pd.Series(keys, dtype=object).fillna("")})  # a key id is never ""
    keys_per_id = frame.drop_duplicates().groupby("id")["key"].size()
    return frame["id"].isin(keys_per_id.index[keys_per_id > 1])
