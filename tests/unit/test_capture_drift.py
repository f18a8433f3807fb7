"""capture_drift.feature_psi: the pods' PSI (monitor.py) over a table of captures."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from flywheel.feedback import capture_drift
from flywheel.training import drift


def test_feature_psi_is_the_monitors_figure_with_missing_values_and_unknown_categories() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, 500)
    manifest = {
        "feature_stats": {
            "x": drift.numeric_profile(train),
            "c": drift.categorical_profile(["a", "b"] * 50, ["a", "b"]),
            "gone": drift.numeric_profile(train),  # profiled, not captured: left out
        },
        "prediction_stats": drift.numeric_profile(train),
    }
    x = [*rng.normal(1, 1, 60).tolist(), None]
    c = ["a"] * 50 + ["zz", None] + ["b"] * 9
    features = pa.StructArray.from_arrays([pa.array(x, pa.float64()), pa.array(c, pa.string())], names=["x", "c"])
    table = pa.table({"version": [1] * 30 + [2] * 31, "prediction": x, "features": features,
                      "captured_at": [datetime(2024, 5, 1, tzinfo=UTC)] * 61})  # fmt: skip
    rows = {r["feature"]: r for r in capture_drift.feature_psi(manifest, table, version=2)}
    assert set(rows) == {"x", "c", "(prediction)"}
    stats = manifest["feature_stats"]
    assert rows["x"]["psi"] == drift.psi(stats["x"]["proportions"], drift.histogram(stats["x"], x))
    assert rows["c"]["psi"] == drift.psi(stats["c"]["proportions"], drift.histogram(stats["c"], c))
    assert (rows["x"]["values"], rows["x"]["binned"], rows["c"]["binned"]) == (61, 60, 61)
    assert rows["(prediction)"]["values"] == 31, "only the chosen version's predictions"
    assert rows["x"]["level"] == "significant"
    assert capture_drift.feature_psi(manifest, None) == []


@pytest.mark.parametrize(("value", "level"), [(0.05, "stable"), (0.1, "stable"), (0.2, "shift"), (0.3, "significant")])
def test_levels(value: float, level: str) -> None:
    assert capture_drift.level(value) == level
