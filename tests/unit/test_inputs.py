"""Request checks: the vectorised path reports exactly what a row-by-row scan would."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from flywheel.data.sample_data import savings
from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.schema import load_schema
from flywheel.serving.inputs import SCAN_MAX, _check_value, as_list, joined, records_to_columns, v2_to_columns

SCHEMA = load_schema("savings")
ROWS = json.loads(savings(200, seed=3).drop(columns=["monthly_savings"]).to_json(orient="records"))
CORRUPTIONS = [("age", 17), ("age", None), ("age", "old"), ("dependents", 2.5), ("income", -1), ("income", True),
               ("region", "mars"), ("region", 3), ("debt", 1e12), ("credit_score", "n/a")]  # fmt: skip


def assert_columns(got: dict[str, object], sent: dict[str, list[object]]) -> None:
    """The checked columns hold the values sent: as they were (a few rows, or a categorical feature), or, for a
    numeric feature of more than SCAN_MAX rows, as the float64 array the checks built (a null as NaN)."""
    assert list(got) == list(sent)
    for name, values in sent.items():
        col = got[name]
        if isinstance(col, np.ndarray):
            assert SCHEMA.by_name[name].type == "numeric" and len(values) > SCAN_MAX and col.dtype == np.float64
            assert np.array_equal(col, np.asarray(values, dtype=np.float64), equal_nan=True), name
        else:
            assert len(values) <= SCAN_MAX or SCHEMA.by_name[name].type == "categorical", name
            assert repr(col) == repr(values), name


def scan(rows: list[dict[str, object]]) -> tuple[int, str] | None:
    """The reference: instance by instance, feature by feature."""
    for i, row in enumerate(rows):
        for f in SCHEMA.features:
            try:
                _check_value(f, row.get(f.name), i)
            except InvalidInput as e:
                return i, e.detail["field"]
    return None


@pytest.mark.parametrize("seed", range(25))
def test_vectorised_checks_match_a_scan(seed: int) -> None:
    rng = random.Random(seed)
    rows = [dict(r) for r in ROWS]
    for _ in range(rng.randint(1, 3)):
        field, value = rng.choice(CORRUPTIONS)
        rows[rng.randrange(len(rows))][field] = value
    with pytest.raises(InvalidInput) as info:
        records_to_columns(SCHEMA, rows, 1000)
    assert (info.value.detail["instance"], info.value.detail["field"]) == scan(rows)


def test_clean_rows_and_nullable_gaps() -> None:
    cols = records_to_columns(SCHEMA, ROWS, 1000)
    assert [len(c) for c in cols.values()] == [len(ROWS)] * len(SCHEMA.features)
    gaps = [i for i, r in enumerate(ROWS) if r["credit_score"] is None]
    assert gaps and all(math.isnan(cols["credit_score"][i]) for i in gaps)


def test_structure_errors() -> None:
    with pytest.raises(PayloadTooLarge):
        records_to_columns(SCHEMA, ROWS, 10)
    with pytest.raises(InvalidInput, match="instance 1, field 'colour'"):
        records_to_columns(SCHEMA, [ROWS[0], {**ROWS[1], "colour": "red"}], 10)
    with pytest.raises(InvalidInput, match="instance 0, field 'age': missing"):
        records_to_columns(SCHEMA, [{k: v for k, v in ROWS[0].items() if k != "age"}], 10)
    with pytest.raises(InvalidInput, match="not an object"):
        records_to_columns(SCHEMA, [[1, 2]], 10)


def test_v2_columns() -> None:
    def tensor(k: str) -> dict[str, object]:
        kind = "BYTES" if k == "region" else "FP64"
        return {"name": k, "shape": [2], "datatype": kind, "data": [ROWS[0][k], ROWS[1][k]]}

    inputs = [tensor(k) for k in SCHEMA.feature_names]
    assert records_to_columns(SCHEMA, ROWS[:2], 10) == v2_to_columns(SCHEMA, {"inputs": inputs}, 10)
    inputs[0]["shape"] = [3]
    with pytest.raises(InvalidInput, match="shape"):
        v2_to_columns(SCHEMA, {"inputs": inputs}, 10)


@pytest.mark.parametrize("seed", range(25))
def test_few_rows_take_the_quick_pass_only_when_a_scan_would_pass(seed: int) -> None:
    """1-16 rows go through the quick check (`_small_and_fine`) first: it may pass a request only when the exact
    checks pass it unchanged, and whatever it turns down is reported as the scan reports it."""
    rng = random.Random(seed)
    rows = [dict(r) for r in rng.sample(ROWS, rng.randint(1, 16))]
    odd = [*CORRUPTIONS, ("income", float("nan")), ("income", float("inf")), ("age", 40.0), ("age", 40.5),
           ("dependents", False), ("credit_score", 850), ("credit_score", 851), ("region", "North")]  # fmt: skip
    if rng.random() < 0.7:
        field, value = rng.choice(odd)
        rows[rng.randrange(len(rows))][field] = value
    expected = scan(rows)
    if expected is None:  # the values as sent, a null of a numeric feature as NaN (repr: NaN != NaN)
        sent = {f.name: [math.nan if r.get(f.name) is None and f.type == "numeric" else r.get(f.name) for r in rows]
                for f in SCHEMA.features}  # fmt: skip
        assert_columns(records_to_columns(SCHEMA, rows, 100), sent)
    else:
        with pytest.raises(InvalidInput) as info:
            records_to_columns(SCHEMA, rows, 100)
        assert (info.value.detail["instance"], info.value.detail["field"]) == expected


def structure_scan(rows: list[object]) -> tuple[int, str | None] | None:
    """The reference for an instance's shape: the first instance that is not an object, has a key the schema lacks
    (the first in sorted order), or lacks a feature that is not nullable."""
    names = set(SCHEMA.feature_names)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return i, None
        unknown = sorted(set(row) - names)
        if unknown:
            return i, unknown[0]
        missing = [n for n in SCHEMA.feature_names if n not in row and not SCHEMA.by_name[n].nullable]
        if missing:
            return i, missing[0]
    return None


@pytest.mark.parametrize("seed", range(30))
def test_batch_shapes_are_judged_as_one_instance_at_a_time(seed: int) -> None:
    """A batch of plain objects with as many keys as features is read row-wise in one go; an object whose keys are
    the same count but not the same names (a feature renamed), one with a nullable feature left out, an extra key
    or something that is not an object is reported (or read) exactly as the instance-by-instance check would."""
    rng = random.Random(seed)
    rows: list[object] = [dict(r) for r in rng.sample(ROWS, rng.randint(2, 40))]
    for _ in range(rng.randint(0, 2)):
        i = rng.randrange(len(rows))
        row = rows[i]
        if not isinstance(row, dict):
            continue
        kind = rng.choice(["rename", "drop-nullable", "drop", "extra", "list"])
        if kind == "rename":
            row["colour"] = row.pop(rng.choice(SCHEMA.feature_names))
        elif kind == "drop-nullable":
            row.pop("credit_score", None)
        elif kind == "drop":
            row.pop(rng.choice(SCHEMA.feature_names), None)
        elif kind == "extra":
            row["zz_extra"] = 1
        else:
            rows[i] = list(row.values())
    expected = structure_scan(rows)
    if expected is None:
        valid = scan(rows)  # type: ignore[arg-type]
        if valid is None:
            sent = {f.name: [math.nan if r.get(f.name) is None and f.type == "numeric" else r.get(f.name)
                             for r in rows] for f in SCHEMA.features}  # type: ignore[union-attr]  # fmt: skip
            assert_columns(records_to_columns(SCHEMA, rows, 100), sent)
        return
    with pytest.raises(InvalidInput) as info:
        records_to_columns(SCHEMA, rows, 100)
    assert info.value.detail["instance"] == expected[0]
    if expected[1] is None:
        assert "not an object" in str(info.value)
    else:
        assert info.value.detail["field"] == expected[1]


def test_many_rows_hand_numeric_columns_on_as_float_arrays_and_join_with_few() -> None:
    """A request of more than SCAN_MAX rows: its numeric columns are the float64 arrays the checks built (what the
    matrix, the relay and the capture take as they are); a batch of it and a small request joins them in order."""
    many = records_to_columns(SCHEMA, [dict(r) for r in ROWS[:40]], 100)
    few = records_to_columns(SCHEMA, [dict(r) for r in ROWS[40:42]], 100)
    for f in SCHEMA.features:
        assert isinstance(many[f.name], np.ndarray) == (f.type == "numeric"), f.name
        assert isinstance(few[f.name], list), f.name
    both = joined([many, few])
    for f in SCHEMA.features:
        want = [r.get(f.name) for r in ROWS[:42]]
        got = as_list(both[f.name])
        if f.type == "numeric":
            assert np.array_equal(np.asarray(got, dtype=float), np.asarray(want, dtype=float), equal_nan=True)
            assert all(type(v) is float for v in as_list(many[f.name]))  # Python floats, not numpy scalars
        else:
            assert got == want
