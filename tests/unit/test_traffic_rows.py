"""The rows `flywheel traffic` sends (flywheel/cli/traffic_rows.py) pass the API's own input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.cli.traffic_rows import rows_from_csv, sample_rows
from flywheel.data.sample_data import GENERATORS
from flywheel.errors import FlywheelError
from flywheel.schema import Schema, load_schema
from flywheel.serving.inputs import records_to_columns

CUSTOM = Schema.model_validate({
    "name": "fraud", "task": "classification", "target": {"name": "fraud", "classes": ["no", "yes"]},
    "features": [
        {"name": "amount", "type": "numeric", "min": 0.5, "max": 2.5},
        {"name": "items", "type": "numeric", "integer": True, "min": 1},
        {"name": "balance", "type": "numeric", "max": -10},
        {"name": "score", "type": "numeric", "nullable": True},
        {"name": "channel", "type": "categorical", "categories": ["web", "app"]},
    ],
})  # fmt: skip


@pytest.mark.parametrize("name", ["savings", "churn"])
def test_builtin_schemas_get_their_generators_rows(name: str) -> None:
    schema = load_schema(name)
    rows = sample_rows(schema, rows=300, seed=4)
    assert len(rows) == 300 and all(set(r) == set(schema.feature_names) for r in rows)  # no target
    records_to_columns(schema, rows, 10_000)  # raises on any value the API would refuse
    generated = GENERATORS[name](300, seed=4)
    assert [r[schema.features[0].name] for r in rows] == generated[schema.features[0].name].tolist()


def test_other_schemas_get_values_within_their_bounds() -> None:
    rows = sample_rows(CUSTOM, rows=500, seed=1)
    records_to_columns(CUSTOM, rows, 10_000)
    assert all(0.5 <= r["amount"] <= 2.5 and 1 <= r["items"] <= 101 and -110 <= r["balance"] <= -10 for r in rows)
    assert all(isinstance(r["items"], int) for r in rows)
    assert {r["channel"] for r in rows} == {"web", "app"}
    assert sample_rows(CUSTOM, rows=5, seed=1) == rows[:5]  # the seed decides


def test_a_csv_replays_its_feature_columns(tmp_path: Path) -> None:
    schema = load_schema("savings")
    path = tmp_path / "batch.csv"
    frame = GENERATORS["savings"](300, seed=4)  # 20 rows without a credit score
    frame["note"] = "extra"
    frame.to_csv(path, index=False)
    rows = rows_from_csv(schema, str(path))
    assert len(rows) == 300 and all(set(r) == set(schema.feature_names) for r in rows)  # target and note dropped
    records_to_columns(schema, rows, 10_000)
    assert sum(r["credit_score"] is None for r in rows) == 20  # missing values sent as null
    frame.drop(columns=["income"]).to_csv(path, index=False)
    with pytest.raises(FlywheelError, match=r"lacks the feature column\(s\) \['income'\]"):
        rows_from_csv(schema, str(path))
    with pytest.raises(FlywheelError, match="cannot read rows from"):
        rows_from_csv(schema, str(tmp_path / "missing.csv"))
