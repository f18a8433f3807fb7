"""Delayed labels: a feedback CSV gives the true outcome of captured predictions by their id (docs/captures.md).

`feedback/<model>/<name>.csv` has exactly two columns, `id` and the schema's target. It is checked with the
batch validator's own pieces (the same byte sniffing, header reading, streaming pyarrow reader, target checks
and report shape: BatchRejected naming the check, the column and the CSV lines, header = line 1), so a
feedback file and a batch are rejected in the same words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.data.header_checks import _problem, file_header, normalise, repeated
from flywheel.data.validation import Problems, Source, _categorical, _format_error, _numeric, _reader
from flywheel.errors import BatchRejected
from flywheel.schema import Schema

FEEDBACK_PREFIX = "feedback/"
ID_COLUMN = "id"
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # the same rule as a client-supplied prediction id


def feedback_prefix(model: str, prefix: str = FEEDBACK_PREFIX) -> str:
    """Where model `model`'s label files go."""
    return f"{prefix}{model}/"


def _header(names: list[str], target: str) -> list[dict[str, Any]]:
    cols = [normalise(n) for n in names]
    want = [ID_COLUMN, target]
    problems = []
    missing = [c for c in want if c not in cols]
    unknown = [c[:60] for c in dict.fromkeys(cols) if c not in want][:20]
    dupes = repeated(cols)
    if missing:
        problems.append(_problem("header", f"missing column(s) {missing}; a feedback file has exactly {want}"))
    if unknown:
        problems.append(_problem("header", f"unknown column(s) {unknown}; a feedback file has exactly {want}"))
    if dupes:
        problems.append(_problem("header", f"duplicated column(s) {dupes} (names compared without spaces)"))
    return problems


def _ids(arr: Any, found: Problems, offset: int) -> pa.Array:
    s = pc.utf8_trim_whitespace(arr)
    empty = np.asarray(pc.equal(s, "").to_numpy(zero_copy_only=False), dtype=bool)
    valid = np.asarray(pc.match_substring_regex(s, ID_PATTERN).to_numpy(zero_copy_only=False), dtype=bool)
    found.add("null", ID_COLUMN, f"'{ID_COLUMN}' is empty", empty, offset)
    text = f"'{ID_COLUMN}' is not 1 to 128 characters of A-Z a-z 0-9 . _ : -"
    found.add("id", ID_COLUMN, text, ~empty & ~valid, offset)
    return s


def _duplicates(ids: pa.Array, found: Problems) -> None:
    """Every row whose id is on another row too: a file gives one label per prediction."""
    series = pd.Series(ids.to_numpy(zero_copy_only=False), dtype=object)
    dup = series.duplicated(keep=False).to_numpy() & (series != "").to_numpy()
    if dup.any():
        text = f"'{ID_COLUMN}' {{seen}} appear(s) on more than one row"
        found.add("duplicates", ID_COLUMN, text, dup, 0)
        found.add_seen("duplicates", ID_COLUMN, text, [str(v)[:40] for v in series[dup].unique()[:50]])


def validate_feedback(src: Source, key: str, schema: Schema) -> pa.Table:
    """Check one feedback file; return its labels as columns `id` (string) and the target (float64 for
    regression, string for classification), in file order. Raises BatchRejected naming every problem."""
    names = file_header(src, key)
    target = schema.target
    problems = _header(names, target.name)
    if problems:
        raise BatchRejected(key, problems)
    raw = {normalise(n): n for n in names}
    found, rows, blocks = Problems(), 0, []
    try:
        reader = _reader(src, {n: pa.string() for n in names})
        if reader.schema.names != names:
            raise BatchRejected(key, [_problem("format", "the header is quoted in a way that cannot be read")])
        for block in reader:
            ids = _ids(block.column(raw[ID_COLUMN]), found, rows)
            arr = block.column(raw[target.name])
            if target.classes:
                label = _categorical(arr, target.name, target.classes, False, found, rows)
            else:
                label = _numeric(arr, target.name, found, rows, lo=target.min, hi=target.max)
            blocks.append(pa.table({ID_COLUMN: ids, target.name: label}))
            rows += block.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:  # the bytes; anything else is the machine's problem
        raise _format_error(src, key, e, rows) from e
    if rows == 0:
        raise BatchRejected(key, [_problem("empty", "the file has a header but no rows")])
    table = pa.concat_tables(blocks)
    _duplicates(table.column(ID_COLUMN).combine_chunks(), found)
    if found:
        raise BatchRejected(key, found.as_list())
    return table
