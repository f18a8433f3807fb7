from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.errors import SchemaError
from flywheel.schema import load_schema


def test_builtin_schemas_load() -> None:
    savings = load_schema("savings")
    assert savings.task == "regression" and savings.target.name == "monthly_savings"
    assert savings.categorical == ["region"]
    churn = load_schema("churn")
    assert churn.task == "classification" and churn.target.classes == ("no", "yes")


def test_schema_from_file(tmp_path: Path) -> None:
    doc = {
        "name": "houses",
        "task": "regression",
        "target": {"name": "price"},
        "features": [{"name": "rooms", "type": "numeric", "min": 1, "integer": True}],
    }
    path = tmp_path / "houses.json"
    path.write_text(json.dumps(doc))
    assert load_schema(str(path)).feature_names == ["rooms"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "classification"}, "classes"),
        ({"features": [{"name": "a", "type": "categorical"}]}, "categories"),
        ({"features": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]}, "duplicate"),
        ({"features": [{"name": "price", "type": "numeric"}]}, "also a feature"),
        ({"features": [{"name": "a", "type": "numeric", "min": 5, "max": 1}]}, "min > max"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_schema_names_the_problem(tmp_path: Path, change: dict[str, object], message: str) -> None:
    doc = {
        "name": "x",
        "task": "regression",
        "target": {"name": "price"},
        "features": [{"name": "a", "type": "numeric"}],
        **change,
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=message):
        load_schema(str(path))


def test_unknown_schema_reference() -> None:
    with pytest.raises(SchemaError, match="neither a built-in"):
        load_schema("no-such-schema")
