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


def test_a_header_far_wider_than_the_schema_is_rejected_naming_the_count() -> None:
    """Before the rows are read and in one pass over the names (a 32k-column header took 15 s before)."""
    wide = HEADER.rstrip(b"\n") + b"".join(b",x%d" % i for i in range(10_000)) + b"\n"  # 78 KB: a header fits
    (p,) = problems(wide + b"1" + b",1" * 10_008 + b"\n")
    shown = ", ".join(f"'x{i}'" for i in range(20))
    assert p["message"] == (
        f"unknown column(s) [{shown}] and 9980 more (the header has 10009 columns, the schema 9); "
        f"expected {SAVINGS.columns}"
    )
    extra = HEADER.rstrip(b"\n") + b"".join(b",x%d" % i for i in range(20)) + b"\n"  # all named: no count
    (p,) = problems(extra + b"1" + b",1" * 28 + b"\n")
    assert p["message"] == f"unknown column(s) [{shown}]; expected {SAVINGS.columns}"
    copies = HEADER.rstrip(b"\n") + b",age" * 10_000 + b"\n"  # known names, repeated: the same in one pass
    (p,) = problems(copies + b"1" + b",1" * 10_008 + b"\n")
    assert p["message"] == "duplicated column(s) ['age'] (names compared without spaces)"


def test_repeated_header_names_are_all_named() -> None:
    body = HEADER.rstrip(b"\n") + b", age ,region,age\n" + b"1," * 11 + b"1\n"
    (p,) = problems(body)
    assert p["message"] == "duplicated column(s) ['age', 'region'] (names compared without spaces)"


def test_a_long_value_outside_the_categories_is_shortened() -> None:
    row = b"5000,2000,40,1,100,700,2.0," + b"q" * 300 + b",100\n"
    (p,) = problems(HEADER + row)
    assert p["check"] == "category" and "'" + "q" * 40 + "…'" in str(p["message"]) and "q" * 41 not in str(p["message"])
