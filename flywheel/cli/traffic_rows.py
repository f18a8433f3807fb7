"""The rows `flywheel traffic` sends: a model's own kind of rows, so both versions of a canary see the same mix.

- a built-in schema (savings, churn): rows of its documented generator (flywheel/data/sample_data.py);
- any other schema: values drawn from the schema itself (categories; numbers within min/max, else a range
  beside the bound given, else 0-100; whole numbers where `integer`);
- `--rows-from FILE.csv`: the file's feature columns (the target and other columns dropped).
"""

from __future__ import annotations

import json
import random
from typing import Any

from flywheel.errors import FlywheelError
from flywheel.schema import BUILTIN_SCHEMAS, Feature, Schema, load_schema

POOL_ROWS = 2000  # rows are drawn at random from this many per request: enough variety for a prediction histogram
SPAN = 100.0  # the range of a numeric feature with at most one bound


def sample_rows(schema: Schema, rows: int = POOL_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """`rows` valid instances of `schema`."""
    builtin = schema.name if schema.name in BUILTIN_SCHEMAS else None
    if builtin and load_schema(builtin).model_dump(mode="json") == schema.model_dump(mode="json"):
        from flywheel.data.sample_data import GENERATORS

        frame = GENERATORS[builtin](rows, seed=seed)
        return _records(frame[schema.feature_names])
    rng = random.Random(seed)
    return [{f.name: _value(f, rng) for f in schema.features} for _ in range(rows)]


def _value(f: Feature, rng: random.Random) -> Any:
    if f.categories is not None:
        return rng.choice(f.categories)
    low = f.min if f.min is not None else (f.max - SPAN if f.max is not None else 0.0)
    high = f.max if f.max is not None else low + SPAN
    if f.integer:
        return rng.randint(int(-(-low // 1)), int(high // 1))  # whole numbers within [low, high]
    return round(rng.uniform(low, high), 4)


def rows_from_csv(schema: Schema, path: str, limit: int = 100_000) -> list[dict[str, Any]]:
    """The feature columns of the first `limit` rows of a CSV (other columns dropped; nulls as null)."""
    import pandas as pd

    wanted = set(schema.feature_names)
    try:
        frame = pd.read_csv(path, usecols=lambda c: c in wanted, nrows=limit,
                            dtype={n: "string" for n in schema.categorical})  # fmt: skip
    except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors
        raise FlywheelError(f"cannot read rows from {path}: {e}") from e
    missing = [n for n in schema.feature_names if n not in frame.columns and not schema.by_name[n].nullable]
    if missing:
        raise FlywheelError(f"{path} lacks the feature column(s) {missing} of schema {schema.name!r}")
    if frame.empty:
        raise FlywheelError(f"{path} has no rows")
    return _records(frame)


def _records(frame: Any) -> list[dict[str, Any]]:
    """Plain JSON values (missing as null), through pandas' own JSON writer."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows
