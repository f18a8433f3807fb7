"""The training window: the newest accepted batches up to FLYWHEEL_TRAIN_WINDOW_ROWS, so the cost of a
retrain stops growing with history. Whole batches only; the newest one always counts."""

from __future__ import annotations

from typing import Any

from flywheel.data.catalog import Entry, repeats


def training_window(entries: list[Entry], limit_rows: int) -> tuple[list[Entry], list[dict[str, Any]]]:
    """(batches to train on, sorted by key; batches left out, each with why)."""
    copies = repeats(entries)  # the same bytes under another name count once
    left_out = [{**e.lineage(), "reason": f"same content as {copies[e.key]}"} for e in entries if e.key in copies]
    first = [e for e in entries if e.key not in copies]
    chosen: list[Entry] = []
    total = 0
    for e in sorted(first, key=lambda e: (e.uploaded, e.key), reverse=True):
        if chosen and total + e.rows > limit_rows:
            left_out.append({**e.lineage(), "reason": f"outside the training window ({limit_rows} rows)"})
            continue
        chosen.append(e)
        total += e.rows
    return sorted(chosen, key=lambda e: e.key), sorted(left_out, key=lambda d: d["key"])
