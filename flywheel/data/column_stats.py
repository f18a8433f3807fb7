"""One pass over a CSV's columns for `schema infer`: what each column's cells showed (numbers, whole numbers,
range, zeros, missing cells and their lines, distinct values up to MAX_CATEGORIES), in bounded memory: a group of
blocks at a time (GROUP_BYTES) and, per column, at most MAX_CATEGORIES + 1 values of at most MAX_CATEGORY_CHARS
characters (a column with more or longer ones is counted, not kept)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.data.header_checks import shorten
from flywheel.data.validation import MAX_LINES_REPORTED, parse_numbers

MAX_CATEGORIES = 100  # more distinct text values: an identifier or free text (HGB also takes at most 255)
MAX_CATEGORY_CHARS = 200  # a longer text value is free text, not a category
GROUP_ROWS = 4096  # blocks are joined up to this many rows or GROUP_BYTES before the per-column work ...
GROUP_BYTES = 16 << 20  # ... whose fixed cost per call would outweigh the few rows of a wide file's 1 MiB block
_WHOLE = r"^[+-]?[0-9]+$"


@dataclass
class ColumnStats:
    """What one column's cells showed, gathered block by block in bounded memory."""

    name: str
    values: int = 0  # non-empty cells
    missing: int = 0
    missing_lines: list[int] = field(default_factory=list)
    not_numbers: int = 0
    not_number_lines: list[int] = field(default_factory=list)
    not_number_seen: list[str] = field(default_factory=list)
    whole: bool = True  # every number a whole number
    written_whole: bool = True  # ... and written without a decimal point or exponent
    lo: float = math.inf
    hi: float = -math.inf
    zeros: int = 0
    counts: dict[str, int] | None = field(default_factory=dict)  # None once past MAX_CATEGORIES distinct values
    counting: bool = True  # increasing by exactly one from row to row (a row number)
    last: float | None = None
    longest: int = 0  # characters in the longest (trimmed) cell
    long_seen: str = ""  # the first cell over MAX_CATEGORY_CHARS, shortened

    def update(self, arr: pa.Array, offset: int) -> None:
        values, empty, not_number = parse_numbers(arr)
        s = pc.utf8_trim_whitespace(arr)
        finite = np.isfinite(values)
        not_number |= ~empty & ~finite  # 'inf' is rejected by validation's range check: not a usable number
        self.missing += int(empty.sum())
        self.missing_lines += _lines(empty, offset, MAX_LINES_REPORTED - len(self.missing_lines))
        self.values += int((~empty).sum())
        if not_number.any():
            self.not_numbers += int(not_number.sum())
            self.not_number_lines += _lines(not_number, offset, MAX_LINES_REPORTED - len(self.not_number_lines))
            if len(self.not_number_seen) < 5:
                seen = pc.unique(pc.filter(s, pa.array(not_number)))[:5].to_pylist()
                self.not_number_seen = list(dict.fromkeys([*self.not_number_seen, *map(shorten, seen)]))[:5]
        lengths = pc.utf8_length(s)
        self.longest = max(self.longest, pc.max(lengths).as_py() or 0)
        if self.longest > MAX_CATEGORY_CHARS and not self.long_seen:  # free text: stop keeping its values
            self.long_seen = shorten(pc.filter(s, pc.greater(lengths, MAX_CATEGORY_CHARS))[0].as_py())
            self.counts = None
        numbers = values[finite]
        if numbers.size:
            self.lo, self.hi = min(self.lo, float(numbers.min())), max(self.hi, float(numbers.max()))
            self.zeros += int((numbers == 0).sum())
            self.whole = self.whole and bool((numbers == np.round(numbers)).all())
            if self.written_whole:
                written = pc.match_substring_regex(pc.filter(s, pa.array(finite)), _WHOLE)
                self.written_whole = bool(pc.all(written).as_py())
        if self.counting:
            steps = np.diff(np.concatenate([[np.nan if self.last is None else self.last], values]))
            self.counting = bool(finite.all() and (steps[1 if self.last is None else 0 :] == 1).all())
            self.last = float(values[-1]) if len(values) else self.last
        if self.counts is not None:
            kept = pc.value_counts(pc.filter(s, pa.array(~empty)))
            if len(kept) <= MAX_CATEGORIES:  # more in this block alone: no need to turn them into Python
                for value, n in zip(kept.field(0).to_pylist(), kept.field(1).to_pylist(), strict=True):
                    self.counts[value] = self.counts.get(value, 0) + n
            if len(kept) > MAX_CATEGORIES or len(self.counts) > MAX_CATEGORIES:
                self.counts = None

    @property
    def numeric(self) -> bool:
        return self.not_numbers == 0

    @property
    def free_text(self) -> str | None:
        """Why the column is free text rather than categories (a value too long), or None."""
        if self.longest <= MAX_CATEGORY_CHARS:
            return None
        return (f"values up to {self.longest} characters (e.g. {self.long_seen!r}): free text? a category "
                f"is at most {MAX_CATEGORY_CHARS} characters")  # fmt: skip

    def lines_text(self, lines: list[int], count: int) -> str:
        more = f" (of {count})" if count > len(lines) else ""
        return f"line(s) {lines}{more}"


def _lines(mask: np.ndarray, offset: int, room: int) -> list[int]:
    return [int(i) + offset + 2 for i in np.flatnonzero(mask)[: max(room, 0)]] if room > 0 else []


def _grouped(blocks: Iterator[pa.RecordBatch], width: int) -> Iterator[tuple[int, Iterator[pa.Array]]]:
    """(rows, one array per column) of consecutive blocks joined up to GROUP_ROWS rows or GROUP_BYTES. A 1 MiB
    block of a wide file holds few rows, and the fixed cost of each column's update would outweigh them."""
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for block in blocks:
        pending.append(block)
        rows, size = rows + block.num_rows, size + block.nbytes
        if rows >= GROUP_ROWS or size >= GROUP_BYTES:
            yield rows, _columns(pending, width)
            pending, rows, size = [], 0, 0
    if pending:
        yield rows, _columns(pending, width)


def _columns(blocks: list[pa.RecordBatch], width: int) -> Iterator[pa.Array]:
    """Each column of the blocks as one array, joined as it is asked for: one copy at a time."""
    for i in range(width):
        yield blocks[0].column(i) if len(blocks) == 1 else pa.concat_arrays([b.column(i) for b in blocks])
