"""Cheap looks at a CSV's bytes before and after pyarrow parses it: what kind of file, and which line is ragged."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 64 * 1024
Source = bytes | str | Path


def _open(src: Source) -> BinaryIO:
    return io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")


def sniff(src: Source) -> tuple[str, str] | None:
    """(check, message) when the bytes are plainly not a CSV we can read; None when they may be."""
    with _open(src) as f:
        head = f.read(HEAD_BYTES)
        more = bool(f.read(1))
    if not head.strip() and not more:
        return ("empty", "the file is empty")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("format", "not UTF-8 text: the file is UTF-16 encoded (save it as UTF-8 CSV)")
    if b"\x00" in head:
        return ("format", "not a CSV file (binary content)")
    return None


def header(src: Source) -> list[str] | None:
    """The cells of the first non-blank line (the header), as the csv module reads them; None if unreadable."""
    with _open(src) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        try:
            for row in csv.reader(text):
                if row and row != [""]:
                    return row
        except (csv.Error, UnicodeDecodeError):
            return None
    return None


def first_ragged_line(src: Source) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first non-blank line whose field count differs from the header's."""
    with _open(src) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text)
        want = None
        try:
            for row in reader:
                if not row or row == [""]:
                    continue
                if want is None:
                    want = len(row)
                elif len(row) != want:
                    return reader.line_num, len(row), want
        except csv.Error:
            return None
    return None
