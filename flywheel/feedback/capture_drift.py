"""Drift of captured inputs: per-feature PSI of the captures of a window against a version's training profile.

The figures are the serving pods' (flywheel/serving/monitor.py): `drift.psi(profile["proportions"],
drift.histogram(profile, values))` with the manifest's `feature_stats` (and `prediction_stats` for the
predictions), here over the captured rows of a window instead of a pod's rolling window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flywheel.feedback import captures
from flywheel.training import drift

MIN_VALUES = 50  # the pods export a feature's PSI once their window holds this many values (monitor.py)
SHIFT, SIGNIFICANT = 0.1, 0.25  # drift.psi: above 0.1 a shift worth a look, above 0.25 a significant one
PREDICTION = "(prediction)"


def read_since(
    s3: Any, bucket: str, model: str, since: datetime, prefix: str = captures.CAPTURES_PREFIX
) -> pa.Table | None:
    """The captures of `model` with `captured_at` >= `since` (tz-aware), or None when there is none. Files of
    days before `since` (their `date=` partition) are not read."""
    day = f"{since:%Y-%m-%d}"

    def recent(key: str) -> bool:  # a file of a day before `since` (its date= partition) is not read
        part = captures.day_of(key)
        return not part or part >= day

    table = captures.read(s3, bucket, model, prefix, keep=recent)
    if table is None:
        return None
    return table.filter(pc.greater_equal(table.column("captured_at"), pa.scalar(since, table.schema.field(
        "captured_at").type)))  # fmt: skip


def level(value: float) -> str:
    """How drift.psi's thresholds read a PSI."""
    return "significant" if value > SIGNIFICANT else "shift" if value > SHIFT else "stable"


def _row(name: str, profile: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    counts = drift.bin_counts(profile, values)  # binned once: the PSI's proportions and the count below
    value = drift.psi(profile["proportions"], counts / max(int(counts.sum()), 1))
    return {
        "feature": name,
        "kind": profile["kind"],
        "psi": value,
        "level": level(value),
        "values": len(values),
        "binned": int(counts.sum()),  # numeric: missing values are not binned
    }


def feature_psi(manifest: dict[str, Any], table: pa.Table | None, version: int | None = None) -> list[dict[str, Any]]:
    """One row per profiled feature present in the captures, highest PSI first: feature, kind, psi, level,
    values (captured rows), binned (values in the profile's bins). With `version`, also the predictions that
    version made (as `(prediction)`, against the manifest's `prediction_stats`)."""
    if table is None or table.num_rows == 0:
        return []
    stats: dict[str, Any] = manifest.get("feature_stats") or {}
    features = table.column("features").combine_chunks()
    names = {features.type.field(i).name: i for i in range(features.type.num_fields)}
    rows = [_row(n, p, features.field(names[n]).to_pylist()) for n, p in stats.items() if n in names]
    prediction = manifest.get("prediction_stats")
    if prediction and version is not None:
        mine = table.filter(pc.equal(table.column("version"), version)).column("prediction").to_pylist()
        if mine:
            rows.append(_row(PREDICTION, prediction, mine))
    return sorted(rows, key=lambda r: (-r["psi"], r["feature"]))
