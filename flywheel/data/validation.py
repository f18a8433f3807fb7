"""Batch validation: a CSV is checked against the schema before the model may train on it.

The file is read in blocks by pyarrow's streaming CSV reader, so peak memory grows with a block and with
8 bytes per row (the row hashes of the duplicate check), not with the file. Every problem names the file,
the check, the column and the CSV line numbers (the header is line 1; blank lines are skipped and not
counted). Whatever the bytes, the outcome is typed columns or BatchRejected, never another exception.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flywheel.data.csv_scan import first_bad_utf8_line, first_ragged_line
from flywheel.data.header_checks import Source, _problem, file_header, header_problems, normalise, shorten
from flywheel.errors import BatchRejected
from flywheel.schema import Schema

MAX_LINES_REPORTED = 10
BLOCK_BYTES = 1 << 20  # a row (a line) may be at most this long; 1 MiB keeps the read-ahead small
NULL_TOKENS = pa.array(["nan", "null", "na", "none"])


class SinkFailed(Exception):
    """Writing a validated block failed (disk full, ...): the trainer's problem, never the batch's."""


@dataclass
class _Finding:
    count: int = 0
    lines: list[int] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


class Problems:
    """Row-level problems gathered block by block: a count and the first lines of each (check, column, text)."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None, str], _Finding] = {}

    def add(self, check: str, column: str | None, text: str, mask: np.ndarray, offset: int) -> None:
        idx = np.flatnonzero(mask)
        if not idx.size:
            return
        f = self._found.setdefault((check, column, text), _Finding())
        f.count += int(idx.size)
        room = MAX_LINES_REPORTED - len(f.lines)
        f.lines += [int(i) + offset + 2 for i in idx[:room]]

    def add_seen(self, check: str, column: str, text: str, values: list[str]) -> None:
        f = self._found[(check, column, text)]
        f.seen = set(sorted(f.seen | set(values))[:5])

    def __bool__(self) -> bool:
        return bool(self._found)

    def as_list(self) -> list[dict[str, Any]]:
        out = []
        for (check, column, text), f in self._found.items():
            head = text.replace("{seen}", str(sorted(f.seen)))
            p: dict[str, Any] = {"check": check, "count": f.count, "lines": f.lines}
            if column is not None:
                p["column"] = column
            p["message"] = f"{head} in {f.count} row(s), first at line(s) {f.lines}"
            out.append(p)
        return out


def _np(arr: Any) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def parse_numbers(arr: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, empty, not a number) of a column of strings, read as a numeric column is: values are float64
    with NaN where a cell is empty or not a number; `empty` marks empty cells and the null words."""
    s = pc.utf8_trim_whitespace(arr)
    empty_arrow = pc.or_(pc.equal(s, ""), pc.is_in(pc.utf8_lower(s), value_set=NULL_TOKENS))
    empty = _np(empty_arrow).astype(bool)
    cleaned = pc.if_else(empty_arrow, pa.scalar(None, pa.string()), s)
    try:
        values = _np(pc.cast(cleaned, pa.float64())).astype("float64")
    except pa.ArrowInvalid:  # some cell is not a number: find which, the slow way
        values = pd.to_numeric(pd.Series(_np(cleaned), dtype=object), errors="coerce").to_numpy("float64")
        return values, empty, np.isnan(values) & ~empty
    return values, empty, np.zeros(len(values), dtype=bool)


def _numeric(
    arr: Any,
    name: str,
    problems: Problems,
    offset: int,
    *,
    lo: float | None,
    hi: float | None,
    integer: bool = False,
    nullable: bool = False,
) -> pa.Array:
    values, empty, not_number = parse_numbers(arr)
    problems.add("type", name, f"'{name}' is not a number", not_number, offset)
    if not nullable:
        problems.add("null", name, f"'{name}' is empty but not nullable", empty, offset)
    finite = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        problems.add("range", name, f"'{name}' is infinite", finite & np.isinf(values), offset)
        if lo is not None:
            problems.add("range", name, f"'{name}' below {lo:g}", finite & (values < lo), offset)
        if hi is not None:
            problems.add("range", name, f"'{name}' above {hi:g}", finite & (values > hi), offset)
        if integer:
            whole = np.isinf(values) | (values == np.round(values))
            problems.add("type", name, f"'{name}' is not a whole number", finite & ~whole, offset)
    return pa.array(values, type=pa.float64(), mask=~finite)


def _categorical(
    arr: Any, name: str, allowed: tuple[str, ...], nullable: bool, problems: Problems, offset: int
) -> pa.Array:
    s = pc.utf8_trim_whitespace(arr)
    known = _np(pc.is_in(s, value_set=pa.array(list(allowed)))).astype(bool)
    # "NA", "null", ... mean missing, as in a numeric column, unless the schema lists them as categories
    empty = _np(pc.equal(s, "")).astype(bool) | (~known & _np(pc.is_in(pc.utf8_lower(s), value_set=NULL_TOKENS)))
    outside = ~empty & ~known
    if outside.any():
        text = f"'{name}' has {{seen}} outside {list(allowed)}"  # {seen}: filled in once all blocks are read
        problems.add("category", name, text, outside, offset)
        seen = pc.unique(pc.filter(s, pa.array(outside)))[:50].to_pylist()
        problems.add_seen("category", name, text, [shorten(str(v)) for v in seen])
    if not nullable:
        problems.add("null", name, f"'{name}' is empty but not nullable", empty, offset)
    return pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), s)


@dataclass
class Validated:
    """What validation found in an accepted batch."""

    rows: int
    duplicates: int


def _reader(src: Source, types: dict[str, pa.DataType]) -> pacsv.CSVStreamingReader:
    stream: BinaryIO | str = io.BytesIO(src) if isinstance(src, bytes) else str(src)
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=True
        ),
    )


def _format_error(src: Source, key: str, e: Exception, rows_read: int) -> BatchRejected:
    text = str(e)
    if "straddl" in text:
        return BatchRejected(key, [_problem("format", f"a line near line {rows_read + 2} is longer than "
                                                      f"{BLOCK_BYTES >> 20} MiB")])  # fmt: skip
    if "Empty CSV" in text:
        return BatchRejected(key, [_problem("empty", "the file is empty")])
    if "UTF8" in text or "UTF-8" in text:
        where = first_bad_utf8_line(src)
        at = f"line {where[0]}, byte {where[1]}" if where else f"near line {rows_read + 2}"
        return BatchRejected(key, [_problem("format", f"not UTF-8 text at {at} (save the file as UTF-8)")])
    ragged = first_ragged_line(src) if "columns" in text else None
    if ragged:
        line, got, want = ragged
        return BatchRejected(key, [_problem("format", f"malformed CSV: line {line} has {got} field(s), "
                                                      f"the header has {want}")])  # fmt: skip
    return BatchRejected(key, [_problem("format", f"malformed CSV: {text[:200]}")])


def string_blocks(src: Source, key: str, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The rows under header `names` (from file_header) as blocks of strings, read as validate_stream reads
    them; bytes that cannot be read raise BatchRejected naming the line (schema inference reads with this)."""
    rows = 0
    try:
        reader = _reader(src, {n: pa.string() for n in names})
        if reader.schema.names != names:
            raise BatchRejected(key, [_problem("format", "the header is quoted in a way that cannot be read")])
        for block in reader:
            yield block
            rows += block.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:  # the bytes; anything else is the machine's problem
        raise _format_error(src, key, e, rows) from e


def validate_stream(
    src: Source,
    key: str,
    schema: Schema,
    *,
    max_duplicate_fraction: float = 0.01,
    sink: Callable[[pa.Table], None] | None = None,
) -> Validated:
    """Check one batch block by block; hand each typed block (schema order) to `sink` while it is clean.

    Raises BatchRejected naming every problem. A caller that got blocks must discard them on rejection.
    """
    names = file_header(src, key)
    hint = ""
    if len(names) == 1 and any(d in names[0] for d in ";\t|"):
        hint = "; the header looks separated by another character than ',' (a comma-separated file is expected)"
    problems = header_problems(names, schema, hint)
    if problems:
        raise BatchRejected(key, problems)
    found, rows = Problems(), 0
    hashes: list[np.ndarray] = []
    raw = {normalise(n): n for n in names}
    for block in string_blocks(src, key, names):
        typed = _type_block(block, raw, schema, found, rows)
        hashes.append(pd.util.hash_pandas_object(typed.to_pandas(), index=False).to_numpy())
        if sink is not None and not found:
            try:
                sink(typed)
            except Exception as e:
                raise SinkFailed(f"writing the typed copy of {key} failed: {e}") from e
        rows += block.num_rows
    if rows == 0:
        raise BatchRejected(key, [_problem("empty", "the file has a header but no rows")])
    all_hashes = np.concatenate(hashes)
    _, first = np.unique(all_hashes, return_index=True)
    dup = np.ones(rows, dtype=bool)
    dup[first] = False
    if dup.sum() > max_duplicate_fraction * rows:
        share = f"{max_duplicate_fraction:.2%}"
        found.add("duplicates", None, f"row repeats an earlier row exactly (more than {share} of rows)", dup, 0)
    if found:
        raise BatchRejected(key, found.as_list())
    return Validated(rows=rows, duplicates=int(dup.sum()))


def _type_block(block: pa.RecordBatch, raw: dict[str, str], schema: Schema, found: Problems, offset: int) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for f in schema.features:
        arr = block.column(raw[f.name])
        if f.type == "numeric":
            cols[f.name] = _numeric(
                arr, f.name, found, offset, lo=f.min, hi=f.max, integer=f.integer, nullable=f.nullable
            )
        else:
            cols[f.name] = _categorical(arr, f.name, f.categories or (), f.nullable, found, offset)
    t, arr = schema.target, block.column(raw[schema.target.name])
    if t.classes:
        cols[t.name] = _categorical(arr, t.name, t.classes, False, found, offset)
    else:
        cols[t.name] = _numeric(arr, t.name, found, offset, lo=t.min, hi=t.max)
    return pa.table(cols)


def to_frame(table: pa.Table, schema: Schema) -> pd.DataFrame:
    """Typed columns as training and serving use them: float64 numbers, object categories (None = missing)."""
    frame = table.to_pandas(types_mapper=None)
    for name in [*schema.categorical, *([schema.target.name] if schema.target.classes else [])]:
        frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object, index=frame.index)
    return frame[schema.columns]


def validate_batch(data: bytes, key: str, schema: Schema, *, max_duplicate_fraction: float = 0.01) -> pd.DataFrame:
    """Validate bytes in memory and return the typed frame (tests, small files, `flywheel validate`)."""
    blocks: list[pa.Table] = []
    validate_stream(data, key, schema, max_duplicate_fraction=max_duplicate_fraction, sink=blocks.append)
    return to_frame(pa.concat_tables(blocks), schema)
