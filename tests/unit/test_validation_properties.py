"""Validation never fails with anything but BatchRejected, whatever the bytes (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.data.validation import validate_batch
from flywheel.errors import BatchRejected
from flywheel.schema import load_schema
from tests.helpers import csv_bytes

SAVINGS = load_schema("savings")
GOOD = csv_bytes(40, seed=11).decode()
LINES = GOOD.splitlines(keepends=True)


def outcome(data: bytes) -> str:
    try:
        frame = validate_batch(data, "data/x.csv", SAVINGS)
    except BatchRejected as e:
        rejected = e
    else:
        rejected = None
    if rejected is not None:
        assert rejected.problems and all(p["check"] and p["message"] for p in rejected.problems)
        assert rejected.key == "data/x.csv"
        return "rejected"
    assert list(frame.columns) == SAVINGS.columns and len(frame) > 0
    return "accepted"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    lines = list(LINES)
    header = lines[0].rstrip("\n").split(",")
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["quote", "space", "dup", "drop", "rename", "row", "field", "delim", "nul"]))
        i = draw(st.integers(0, len(header) - 1))
        if op == "quote":
            header[i] = f'"{header[i]}"'
        elif op == "space":
            header[i] = f'"{header[i]} "'
        elif op == "dup":
            header.append(draw(st.sampled_from([header[i], f'"{header[i]} "', f" {header[i]}"])))
        elif op == "drop" and len(header) > 1:
            header.pop(i)
        elif op == "rename":
            header[i] = draw(st.text(max_size=8))
        elif op == "row":
            lines.insert(draw(st.integers(1, len(lines))), draw(st.text(max_size=60)) + "\n")
        elif op == "field":
            row = draw(st.integers(1, len(lines) - 1))
            cells = lines[row].rstrip("\n").split(",")
            cells[i % len(cells)] = draw(st.one_of(st.text(max_size=12), st.just("x" * 200_000), st.just('"a\nb"')))
            lines[row] = ",".join(cells) + "\n"
        elif op == "delim":
            lines = [ln.replace(",", draw(st.sampled_from([";", "\t", "|"]))) for ln in lines]
        elif op == "nul":
            lines.append("\x00\x01")
    text = ",".join(header) + "\n" + "".join(lines[1:])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_are_accepted_or_rejected(data: bytes) -> None:
    assert outcome(data) in {"accepted", "rejected"}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_csvs_are_accepted_or_rejected(data: bytes) -> None:
    assert outcome(data) in {"accepted", "rejected"}


def test_unmutated_good_file_is_accepted() -> None:
    assert outcome(GOOD.encode()) == "accepted"


@pytest.mark.parametrize("second", ['"region "', " region", "region"])
def test_column_repeated_after_normalising_is_a_header_problem(second: str) -> None:
    body = GOOD.replace("monthly_savings\n", f"monthly_savings,{second}\n", 1).encode()
    with pytest.raises(BatchRejected) as info:
        validate_batch(body, "data/x.csv", SAVINGS)
    assert any("duplicated column(s) ['region']" in p["message"] for p in info.value.problems), info.value.problems


def test_huge_field_is_rejected_naming_the_limit() -> None:
    body = GOOD.replace("north", "n" * (5 << 20), 1).encode()
    with pytest.raises(BatchRejected) as info:
        validate_batch(body, "data/x.csv", SAVINGS)
    assert "longer than" in info.value.problems[0]["message"] or info.value.problems[0]["check"] == "category"


def test_ragged_line_is_named() -> None:
    body = (GOOD + "1,2,3\n").encode()
    with pytest.raises(BatchRejected) as info:
        validate_batch(body, "data/x.csv", SAVINGS)
    assert info.value.problems[0]["message"] == "malformed CSV: line 42 has 3 field(s), the header has 9"


def test_semicolon_file_gets_a_delimiter_hint() -> None:
    with pytest.raises(BatchRejected) as info:
        validate_batch(GOOD.replace(",", ";").encode(), "data/x.csv", SAVINGS)
    assert "separated by another character" in info.value.problems[0]["message"]


def test_small_share_of_repeated_rows_is_accepted_by_default() -> None:
    body = GOOD + "".join(LINES[1:2])  # 1 repeat in 41 rows is 2.4%: over the default 1%
    with pytest.raises(BatchRejected):
        validate_batch(body.encode(), "data/x.csv", SAVINGS)
    big = csv_bytes(2000, seed=12).decode()
    body = big + "".join(big.splitlines(keepends=True)[1:2])  # 0.05%
    assert len(validate_batch(body.encode(), "data/x.csv", SAVINGS)) == 2001


def test_a_bad_byte_is_named_by_its_line() -> None:
    lines = list(LINES)
    lines[30] = lines[30].replace("north", "n\xf6rth").replace("south", "s\xf6uth")
    body = "".join(lines).encode("latin-1")
    with pytest.raises(BatchRejected) as info:
        validate_batch(body, "data/x.csv", SAVINGS)
    message = info.value.problems[0]["message"]
    assert message.startswith("not UTF-8 text at line 31, byte"), message


def test_categories_with_braces_are_reported() -> None:
    from flywheel.schema import Schema

    doc = SAVINGS.model_dump(mode="json")
    region = next(f for f in doc["features"] if f["name"] == "region")
    region["categories"] = ["{north}", "south", "east", "west"]
    schema = Schema.model_validate(doc)
    with pytest.raises(BatchRejected) as info:
        validate_batch(GOOD.encode(), "data/x.csv", schema)
    assert any("outside ['{north}'" in p["message"] for p in info.value.problems)


def test_a_failing_sink_is_not_the_batch_s_fault() -> None:
    from flywheel.data.validation import SinkFailed, validate_stream

    def full_disk(_: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(SinkFailed):
        validate_stream(GOOD.encode(), "data/x.csv", SAVINGS, sink=full_disk)


def test_null_tokens_in_a_category_column_mean_missing() -> None:
    lines = list(LINES)
    lines[5] = lines[5].replace("north", "NA").replace("south", "NA").replace("east", "NA").replace("west", "NA")
    with pytest.raises(BatchRejected) as info:  # region is not nullable: reported as empty, not as a category
        validate_batch("".join(lines).encode(), "data/x.csv", SAVINGS)
    (problem,) = info.value.problems
    assert (problem["check"], problem["column"], problem["lines"]) == ("null", "region", [6])


def test_a_column_named_in_another_case_gets_a_hint() -> None:
    with pytest.raises(BatchRejected) as info:
        validate_batch(GOOD.replace("income", "Income", 1).encode(), "data/x.csv", SAVINGS)
    assert "names are case-sensitive (found 'Income' for 'income')" in info.value.problems[0]["message"]
