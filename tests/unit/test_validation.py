from __future__ import annotations

import pytest

from flywheel.data.validation import validate_batch
from flywheel.errors import BatchRejected
from flywheel.schema import load_schema
from tests.helpers import csv_bytes

SAVINGS = load_schema("savings")
HEADER = b"income,expenses,age,dependents,debt,credit_score,tenure_years,region,monthly_savings\n"


def problems(data: bytes, **kw: float) -> list[dict[str, object]]:
    with pytest.raises(BatchRejected) as info:
        validate_batch(data, "data/x.csv", SAVINGS, **kw)
    assert info.value.key == "data/x.csv"
    return info.value.problems


def test_generated_batch_is_valid_and_typed() -> None:
    frame = validate_batch(csv_bytes(300, seed=5), "data/x.csv", SAVINGS)
    assert list(frame.columns) == SAVINGS.columns and len(frame) == 300
    assert frame["age"].dtype == "float64" and frame["region"].dtype == object
    assert frame["credit_score"].isna().any()  # nullable column keeps its gaps


def test_classification_batch_is_valid() -> None:
    frame = validate_batch(csv_bytes(300, seed=5, dataset="churn"), "data/c.csv", load_schema("churn"))
    assert set(frame["churned"]) == {"yes", "no"}


def test_row_level_errors_name_line_and_column() -> None:
    body = HEADER + b"5000,2000,40,1,100,700,2.0,north,100\n" + b"5000,2000,abc,1,100,700,2.0,north,100\n"
    (p,) = problems(body)
    assert p["check"] == "type" and p["column"] == "age" and p["lines"] == [3]


def test_several_problems_are_all_reported() -> None:
    body = HEADER + b"-5,2000,17,1.5,100,900,2.0,mars,\n"
    found = {(p["check"], p.get("column")) for p in problems(body)}
    assert found == {
        ("range", "income"),
        ("range", "age"),
        ("type", "dependents"),
        ("range", "credit_score"),
        ("category", "region"),
        ("null", "monthly_savings"),
    }


def test_header_problems() -> None:
    body = b"income,expenses,age,age,dependents,debt,credit_score,tenure,region,monthly_savings\n1,2,3,3,4,5,6,7,a,9\n"
    messages = " ".join(str(p["message"]) for p in problems(body))
    assert "missing column(s) ['tenure_years']" in messages
    assert "unknown column(s) ['tenure']" in messages
    assert "duplicated column(s) ['age']" in messages


def test_duplicate_rows_threshold() -> None:
    row = b"5000,2000,40,1,100,700,2.0,north,100\n"
    body = HEADER + row * 3
    (p,) = problems(body)
    assert p["check"] == "duplicates" and p["lines"] == [3, 4]
    assert len(validate_batch(body, "data/x.csv", SAVINGS, max_duplicate_fraction=0.7)) == 3


@pytest.mark.parametrize(
    ("body", "check"),
    [(b"", "empty"), (b"   \n", "empty"), (HEADER, "empty"), (b"\x00\x01\x02", "format"), (b"\xff\xfe a,b", "format")],
)
def test_not_a_usable_file(body: bytes, check: str) -> None:
    assert problems(body)[0]["check"] == check
