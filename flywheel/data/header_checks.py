"""A CSV's header, checked before any row is read: the names against the schema (missing, unknown, repeated;
each check one pass, as a hostile header may hold tens of thousands of names), and how messages show names and
values taken from the file. Batches, feedback files and `schema infer` all start here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from flywheel.data.csv_scan import header, sniff
from flywheel.errors import BatchRejected
from flywheel.schema import Schema

MAX_NAMES_SHOWN = 20  # header names listed in a message; beyond them, how many more
SHOWN_CHARS = 40  # a value from the file is cut to this many characters in a message
Source = bytes | str | Path


def _problem(check: str, message: str) -> dict[str, Any]:
    return {"check": check, "message": message}


def normalise(name: str) -> str:
    """How a header cell is compared with the schema: surrounding spaces and a stray BOM do not count."""
    return name.replace("\ufeff", "").strip()


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted; one pass, as a header may hold tens of thousands."""
    return sorted(n for n, k in Counter(names).items() if k > 1)


def shorten(value: str) -> str:
    """A value from the file as a message shows it: at most SHOWN_CHARS characters, then '…'."""
    return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"


def listed(names: list[str]) -> str:
    """Names for a message: the first MAX_NAMES_SHOWN, then how many more."""
    more = f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else ""
    return f"{names[:MAX_NAMES_SHOWN]}{more}"


def header_problems(names: list[str], schema: Schema, hint: str) -> list[dict[str, Any]]:
    """Problems with the header's names; one pass each (sets, a Counter), as a header may hold tens of thousands."""
    cols = [normalise(n) for n in names]
    present, expected = set(cols), set(schema.columns)
    problems = []
    dupes = repeated(cols)
    missing = [c for c in schema.columns if c not in present]
    unknown = [c for c in dict.fromkeys(cols) if c not in expected]
    if missing:
        folded = {c.casefold(): c for c in cols if c not in expected}
        near = [f"{folded[m.casefold()]!r} for {m!r}" for m in missing if m.casefold() in folded]
        if near:
            hint += f"; names are case-sensitive (found {', '.join(near)})"
        problems.append(_problem("header", f"missing column(s) {missing}{hint}"))
    if unknown:
        shown = listed([u[:60] for u in unknown])
        if len(unknown) > MAX_NAMES_SHOWN:  # a file for another schema, or worse: the counts say so at once
            shown += f" (the header has {len(names)} columns, the schema {len(schema.columns)})"
        problems.append(_problem("header", f"unknown column(s) {shown}; expected {schema.columns}"))
    if dupes:
        problems.append(_problem("header", f"duplicated column(s) {listed(dupes)} (names compared without spaces)"))
    return problems


def file_header(src: Source, key: str) -> list[str]:
    """The header's names, once the checks every CSV gets have passed (binary, encoding, line format); else
    BatchRejected naming what is wrong. Batches and feedback files both start here."""
    kind = sniff(src)
    if kind:
        raise BatchRejected(key, [_problem(*kind)])
    names = header(src)
    if isinstance(names, str):
        raise BatchRejected(key, [_problem("format", names)])
    return names
