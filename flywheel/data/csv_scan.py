"""Cheap looks at a CSV's bytes before and after pyarrow parses it: what kind of file, and which line is ragged."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 64 * 1024
HEADER_MAX_BYTES = 128 * 1024
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


def header(src: Source) -> list[str] | str:
    """The cells of the first non-empty line (the header), or why they cannot be read.

    Only the header line's own bytes are decoded, so a bad byte further down is reported where it is.
    """
    with _open(src) as raw:
        line = b""
        while not line.strip(b"\r\n"):
            line = raw.readline(HEADER_MAX_BYTES + 1)
            if not line:
                return "the file has no header line"
    if len(line) > HEADER_MAX_BYTES:
        return f"the header line is longer than {HEADER_MAX_BYTES >> 10} KiB"
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return f"the header line is not UTF-8 text (byte {e.start + 1})"
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        return f"the header line is not readable CSV: {e}"
    return rows[0] if rows and rows[0] else "the file has no header line"


def first_bad_utf8_line(src: Source) -> tuple[int, int] | None:
    """(line, byte in that line) of the first bytes that are not UTF-8, counting every line from 1."""
    with _open(src) as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                return number, e.start + 1
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
