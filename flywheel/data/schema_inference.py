"""A first schema for a user's CSV: types, categories, task and safe bounds guessed from the data (docs/schema.md).

The file is read block by block with validation's own reader and number parser (flywheel/data/validation.py), so
the guess agrees with what `flywheel validate` will accept. Memory grows with a group of blocks (GROUP_BYTES) and,
per column, with at most MAX_CATEGORIES + 1 distinct values of at most MAX_CATEGORY_CHARS characters (a column with
more or longer ones is counted, not kept), never with the file's rows; a file has at most MAX_COLUMNS columns.
Every guess comes with a reason, one line per column, so the user can review it before registering the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.data.column_stats import MAX_CATEGORIES, ColumnStats, _grouped
from flywheel.data.header_checks import Source, file_header, listed, normalise, repeated, shorten
from flywheel.data.validation import string_blocks
from flywheel.errors import FlywheelError
from flywheel.schema import Schema, Task

MAX_COLUMNS = 1000  # a wider file is refused: no tabular model here needs more, and the scan's time grows with them
MAX_AUTO_CLASSES = 10  # a whole-number target with at most this many distinct values is read as classes
IDENTIFIER_MIN_VALUES = 20  # all-distinct text values count as an identifier from this many rows on
BOUND_MIN_VALUES = 30  # no bound is guessed from fewer values
BOUND_ZERO_SHARE = 0.01  # min 0 needs at least this share of values (and two) at exactly 0: a floor the data sits on


class CannotInfer(FlywheelError):
    """The CSV cannot be described by a schema as it is; the message says which columns or rows and why."""

    status = 422


def _sorted(values: list[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


@dataclass
class Inferred:
    """The proposed schema, the rows read and one line per column saying what was guessed and why."""

    schema: Schema
    rows: int
    notes: list[str]


def scan(src: Source, key: str) -> tuple[int, list[ColumnStats]]:
    """Read the whole file once: (rows, statistics per column in header order)."""
    names = file_header(src, key)
    if len(names) > MAX_COLUMNS:
        raise CannotInfer(f"{key}: the header has {len(names)} columns; schema infer takes at most {MAX_COLUMNS} "
                          "(keep the features and the target, remove the others)")  # fmt: skip
    cleaned = [normalise(n) for n in names]
    unnamed = [i + 1 for i, n in enumerate(cleaned) if not n]
    if unnamed:
        hint = " (a pandas index? write the CSV with index=False)" if unnamed == [1] else ""
        raise CannotInfer(f"{key}: column(s) {unnamed} of the header have no name{hint}; name or remove them")
    dupes = repeated(cleaned)
    if dupes:
        raise CannotInfer(f"{key}: the header repeats column(s) {listed(dupes)} (names compared without spaces)")
    stats = [ColumnStats(n) for n in cleaned]
    rows = 0
    for count, columns in _grouped(string_blocks(src, key, names), len(names)):
        for st, column in zip(stats, columns, strict=True):
            st.update(column, rows)
        rows += count
    if rows == 0:
        raise CannotInfer(f"{key}: the file has a header but no rows")
    return rows, stats


def _bound(st: ColumnStats) -> tuple[float | None, str]:
    if st.values < BOUND_MIN_VALUES or st.lo < 0:
        return None, ""
    if st.zeros >= max(2, BOUND_ZERO_SHARE * st.values):
        return 0.0, f"min 0 (never negative, {st.zeros} of {st.values} values exactly 0)"
    return None, ""


def _feature(st: ColumnStats) -> tuple[dict[str, Any], str, str | None]:
    """(schema entry, reason, refusal or None) of one feature column."""
    nullable = f", nullable ({st.missing} empty)" if st.missing else ""
    if st.values == 0:
        empty = (
            "numeric, nullable: every cell is empty; WARNING: the model learns nothing from it, consider removing it"
        )
        return {"name": st.name, "type": "numeric", "nullable": True}, empty, None
    if st.numeric:
        entry: dict[str, Any] = {"name": st.name, "type": "numeric"}
        why = [f"numeric ({st.values} numbers, {st.lo:g} to {st.hi:g})"]
        if st.whole and st.written_whole:
            entry["integer"] = True
            why.append("integer (every value written as a whole number)")
        lo, reason = _bound(st)
        if lo is not None:
            entry["min"] = lo
            why.append(reason)
        if st.missing:
            entry["nullable"] = True
        text = ", ".join(why) + nullable
        if st.counting and st.values >= IDENTIFIER_MIN_VALUES:
            text += "; WARNING: it counts up by one on every row, a row number? remove it from your batches"
        elif st.counts is not None and len(st.counts) == 1:
            text += "; WARNING: one value only, the model learns nothing from it"
        return entry, text, None
    mixed = ""
    if st.not_numbers < st.values:
        mixed = (f"; {st.values - st.not_numbers} of {st.values} values are numbers but not {st.not_number_seen}: "
                 "if those mean missing, leave the cells empty")  # fmt: skip
    if st.free_text:
        return {}, "", f"{st.name!r}: {st.free_text}"
    if st.counts is None:
        if mixed:  # mostly numbers: a missing-value marker the validator does not know, most likely
            return {}, "", f"{st.name!r}: {mixed[2:]} (as text it has more than {MAX_CATEGORIES} distinct values)"
        refusal = f"more than {MAX_CATEGORIES} distinct values (e.g. {st.not_number_seen[:3]}): an identifier or text?"
        return {}, "", f"{st.name!r}: {refusal}"
    if len(st.counts) == st.values and st.values >= IDENTIFIER_MIN_VALUES:
        return {}, "", f"{st.name!r}: all {st.values} values differ (e.g. {st.not_number_seen[:3]}): an identifier?"
    categories = _sorted(list(st.counts))
    entry = {"name": st.name, "type": "categorical", "categories": categories}
    if st.missing:
        entry["nullable"] = True
    shown = f"{[shorten(c) for c in categories[:8]]}"[:-1] + (", ...]" if len(categories) > 8 else "]")
    text = f"categorical, {len(categories)} categories {shown}{nullable}{mixed}"
    once = [c for c in categories if st.counts[c] == 1]
    if once:
        text += f"; {len(once)} seen once: a batch with a value not listed here is rejected, add any you expect"
    return entry, text, None


def _target(st: ColumnStats, task: Task | None) -> tuple[dict[str, Any], Task, str]:
    if st.missing:
        raise CannotInfer(f"target {st.name!r} is empty on {st.lines_text(st.missing_lines, st.missing)}: "
                          "a target is never empty; fill or remove those rows")  # fmt: skip
    distinct = None if st.counts is None else len(st.counts)
    if task is None:
        if not st.numeric:
            task = "classification"
            why = "its values are not numbers"
        elif st.whole and distinct is not None and distinct <= MAX_AUTO_CLASSES:
            task = "classification"
            why = f"{distinct} distinct whole numbers; pass --task regression if they are quantities"
        else:
            task = "regression"
            why = f"{distinct} distinct numbers" if distinct is not None else f"over {MAX_CATEGORIES} distinct numbers"
            why += "; pass --task classification if they are labels" if st.whole and distinct is not None else ""
    else:
        why = "as asked (--task)"
    if task == "regression":
        if not st.numeric:
            raise CannotInfer(f"target {st.name!r} is not a number on "
                              f"{st.lines_text(st.not_number_lines, st.not_numbers)} ({st.not_number_seen}): "
                              "a regression target is numeric")  # fmt: skip
        if st.lo == st.hi:
            raise CannotInfer(f"target {st.name!r} has one value only ({st.lo:g}): nothing to learn")
        entry: dict[str, Any] = {"name": st.name}
        lo, reason = _bound(st)
        if lo is not None:
            entry["min"] = lo
            why += f"; {reason}"
        return entry, task, f"regression ({why}), {st.lo:g} to {st.hi:g}"
    if st.free_text:
        raise CannotInfer(f"target {st.name!r} has {st.free_text}: not class labels")
    if st.counts is None:
        raise CannotInfer(f"target {st.name!r} has more than {MAX_CATEGORIES} distinct values: too many classes "
                          "for classification (--task regression if it is a quantity)")  # fmt: skip
    if len(st.counts) < 2:
        raise CannotInfer(f"target {st.name!r} has one value only ({list(map(shorten, st.counts))}): nothing to learn")
    classes = _sorted(list(st.counts))
    seen = ", ".join(f"{shorten(c)!r} {st.counts[c]}" for c in classes)
    return {"name": st.name, "classes": classes}, task, f"classification ({why}), classes {seen}"


def infer_schema(src: Source, key: str, target: str, *, task: Task | None = None, name: str | None = None) -> Inferred:
    """Propose a schema for the CSV `src` predicting column `target` (CannotInfer or BatchRejected when the file
    cannot be described as it is). `task` overrides the guess from the target's values."""
    rows, stats = scan(src, key)
    by_name = {st.name: st for st in stats}
    if target not in by_name:
        near = [n for n in by_name if n.casefold() == target.casefold()]
        hint = f"; names are case-sensitive: {near[0]!r}?" if near else ""
        raise CannotInfer(f"{key}: no column {target!r}{hint} (columns: {list(by_name)[:50]})")
    if len(stats) < 2:
        raise CannotInfer(f"{key}: the file has only the target column; a schema needs at least one feature")
    t_entry, t_task, t_why = _target(by_name[target], task)
    notes = [f"target {target!r}: {t_why}"]
    features, refused = [], []
    for st in stats:
        if st.name == target:
            continue
        entry, why, refusal = _feature(st)
        if refusal:
            refused.append(refusal)
            continue
        features.append(entry)
        notes.append(f"{st.name!r}: {why}")
    if refused:
        raise CannotInfer(
            f"{key}: column(s) that cannot be features (a batch must hold exactly the schema's columns, so remove "
            "them from the CSV and run again):\n  " + "\n  ".join(refused)
        )
    title = name or Path(key).stem or "inferred"
    schema = Schema.model_validate({
        "name": title,
        "description": f"inferred by `flywheel schema infer` from {Path(key).name} ({rows} rows); review before use",
        "task": t_task,
        "target": t_entry,
        "features": features,
    })  # fmt: skip
    return Inferred(schema=schema, rows=rows, notes=notes)


def dumps(schema: Schema) -> str:
    """The schema as JSON for a person to read: one line per feature."""
    data = schema.model_dump(mode="json", exclude_defaults=True)
    head = {k: v for k, v in data.items() if k != "features"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    feats = ",\n".join(f"    {json.dumps(f)}" for f in data["features"])
    return "{\n" + "\n".join(lines) + '\n  "features": [\n' + feats + "\n  ]\n}\n"
