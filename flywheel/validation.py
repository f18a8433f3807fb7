"""Batch validation: a CSV is checked against the schema before the model may train on it.

Every problem names the file, the check, the column and the CSV line numbers (the header is line 1).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import numpy as np
import pandas as pd

from flywheel.errors import BatchRejected
from flywheel.schema import Schema

MAX_LINES_REPORTED = 10
_REPEATED = re.compile(r"^(.*)\.\d+$")


def _problem(check: str, message: str, column: str | None = None, mask: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"check": check, "message": message}
    if column is not None:
        out["column"] = column
    if mask is not None:
        idx = np.flatnonzero(np.asarray(mask))
        out["count"] = int(idx.size)
        out["lines"] = [int(i) + 2 for i in idx[:MAX_LINES_REPORTED]]
        out["message"] = f"{message} in {idx.size} row(s), first at line(s) {out['lines']}"
    return out


def _read(data: bytes, key: str) -> pd.DataFrame:
    if not data.strip():
        raise BatchRejected(key, [_problem("empty", "the file is empty")])
    if b"\x00" in data[:65536]:
        raise BatchRejected(key, [_problem("format", "not a CSV file (binary content)")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BatchRejected(key, [_problem("format", f"not UTF-8 text at byte {e.start}")]) from e
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True)
    except (pd.errors.ParserError, csv.Error) as e:
        raise BatchRejected(key, [_problem("format", f"malformed CSV: {e}".strip())]) from e
    except pd.errors.EmptyDataError as e:
        raise BatchRejected(key, [_problem("empty", "the file has no header")]) from e
    if frame.empty:
        raise BatchRejected(key, [_problem("empty", "the file has a header but no rows")])
    return frame


def _header(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    cols = [str(c).strip() for c in frame.columns]
    problems = []
    # pandas renames a repeated header "x" to "x.1", "x.2", ...
    dupes = sorted({m.group(1) for c in cols if (m := _REPEATED.match(c)) and m.group(1) in cols})
    missing = [c for c in schema.columns if c not in cols]
    unknown = [c for c in cols if c not in schema.columns and not _REPEATED.match(c)]
    if missing:
        problems.append(_problem("header", f"missing column(s) {missing}"))
    if unknown:
        problems.append(_problem("header", f"unknown column(s) {unknown}; expected {schema.columns}"))
    if dupes:
        problems.append(_problem("header", f"duplicated column(s) {dupes}"))
    return problems


def _numeric(
    raw: pd.Series, name: str, lo: float | None, hi: float | None, integer: bool, nullable: bool
) -> tuple[pd.Series, list[dict[str, Any]]]:
    problems = []
    stripped = raw.str.strip()
    empty = (stripped == "") | stripped.str.lower().isin(["nan", "null", "na", "none"])
    values = pd.to_numeric(stripped.where(~empty), errors="coerce").astype("float64")
    bad_type = values.isna() & ~empty
    if bad_type.any():
        problems.append(_problem("type", f"'{name}' is not a number", name, bad_type))
    if not nullable and empty.any():
        problems.append(_problem("null", f"'{name}' is empty but not nullable", name, empty))
    finite = values.notna()
    if np.isinf(values[finite]).any():
        problems.append(_problem("range", f"'{name}' is infinite", name, np.isinf(values.fillna(0))))
    if lo is not None and (low := finite & (values < lo)).any():
        problems.append(_problem("range", f"'{name}' below {lo:g}", name, low))
    if hi is not None and (high := finite & (values > hi)).any():
        problems.append(_problem("range", f"'{name}' above {hi:g}", name, high))
    if integer and (frac := finite & (values != values.round())).any():
        problems.append(_problem("type", f"'{name}' is not a whole number", name, frac))
    return values, problems


def _categorical(
    raw: pd.Series, name: str, allowed: tuple[str, ...], nullable: bool
) -> tuple[pd.Series, list[dict[str, Any]]]:
    problems = []
    values = raw.str.strip()
    empty = values == ""
    outside = ~empty & ~values.isin(allowed)
    if outside.any():
        seen = sorted(values[outside].unique())[:5]
        problems.append(_problem("category", f"'{name}' has {seen} outside {list(allowed)}", name, outside))
    if not nullable and empty.any():
        problems.append(_problem("null", f"'{name}' is empty but not nullable", name, empty))
    return values.where(~empty, None).astype(object), problems


def validate_batch(data: bytes, key: str, schema: Schema, *, max_duplicate_fraction: float = 0.0) -> pd.DataFrame:
    """Parse and check one batch; returns typed columns in schema order or raises BatchRejected."""
    frame = _read(data, key)
    frame.columns = [str(c).strip() for c in frame.columns]
    problems = _header(frame, schema)
    if problems:
        raise BatchRejected(key, problems)
    typed: dict[str, pd.Series] = {}
    for f in schema.features:
        if f.type == "numeric":
            typed[f.name], found = _numeric(frame[f.name], f.name, f.min, f.max, f.integer, f.nullable)
        else:
            assert f.categories is not None
            typed[f.name], found = _categorical(frame[f.name], f.name, f.categories, f.nullable)
        problems += found
    t = schema.target
    if t.classes:
        typed[t.name], found = _categorical(frame[t.name], t.name, t.classes, nullable=False)
    else:
        typed[t.name], found = _numeric(frame[t.name], t.name, t.min, t.max, False, nullable=False)
    problems += found
    out = pd.DataFrame(typed)
    dup = out.duplicated(keep="first")
    if dup.mean() > max_duplicate_fraction:
        problems.append(_problem("duplicates", "row repeats an earlier row exactly", None, dup))
    if problems:
        raise BatchRejected(key, problems)
    return out
