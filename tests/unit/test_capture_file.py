"""The capture file (flywheel/feedback/captures.py): a dictionary only where values repeat, and what is written is
read back unchanged."""

from __future__ import annotations

import io
import os

import pyarrow.parquet as pq

from flywheel.feedback.captures import KEY_COLUMN, to_parquet
from flywheel.schema import load_schema

SAVINGS = load_schema("savings")


def _file(rows: int) -> tuple[bytes, dict[str, object]]:
    columns: dict[str, object] = {
        "prediction_id": [os.urandom(16).hex() for _ in range(rows)],
        "model": ["savings"] * rows,
        "version": [3] * rows,
        "role": ["production" if i % 10 else "canary" for i in range(rows)],
        "captured_at": [1_765_000_000_000 + i for i in range(rows)],
        "prediction": [100.0 + i / 7 for i in range(rows)],
        "probabilities": [None] * rows,
        "features": {
            f.name: [f"{['north', 'south', 'east'][i % 3]}" for i in range(rows)]
            if f.type == "categorical"
            else [None if i % 50 == 0 else 1000.0 + i * 1.37 for i in range(rows)]
            for f in SAVINGS.features
        },
        KEY_COLUMN: ["k1" if i % 2 else "k2" for i in range(rows)],
    }
    return to_parquet(SAVINGS, columns, {"model": "savings"}), columns


def test_dictionaries_only_for_the_columns_whose_values_repeat() -> None:
    body, _ = _file(2000)
    group = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0)
    dictionary = {
        group.column(i).path_in_schema: any("DICTIONARY" in e for e in group.column(i).encodings)
        for i in range(group.num_columns)
    }
    for repeated in ("model", "role", "features.region", KEY_COLUMN):
        assert dictionary[repeated], repeated
    for distinct in ("prediction_id", "prediction", "features.income", "features.credit_score"):
        assert not dictionary[distinct], distinct


def test_what_is_written_reads_back() -> None:
    body, columns = _file(500)
    table = pq.read_table(io.BytesIO(body))
    assert table.column("prediction_id").to_pylist() == columns["prediction_id"]
    assert table.column("role").to_pylist() == columns["role"]
    assert table.column(KEY_COLUMN).to_pylist() == columns[KEY_COLUMN]
    features = table.column("features").to_pylist()
    written = columns["features"]
    assert isinstance(written, dict)
    for name in ("income", "region"):
        assert [row[name] for row in features] == written[name]
