"""The Drift page against moto's S3: per-feature PSI of captured inputs over a window, equal to drift.psi
computed directly (as the serving pods do) on the same rows against the version's training profile."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from flywheel.feedback.captures import capture_key, to_parquet
from flywheel.schema import load_schema
from flywheel.training import drift
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.ui.conftest import open_app, texts, train

SAVINGS = load_schema("savings")


def inputs(rows: int, seed: int, shift: float) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(csv_bytes(rows, seed=seed, drift=shift)))[SAVINGS.feature_names]
    frame["credit_score"] = frame["credit_score"].astype("float64")
    return frame


def put_captures(stack: Stack, frame: pd.DataFrame, when: datetime, seq: int) -> None:
    n = len(frame)
    columns = {
        "prediction_id": [f"p{seq}-{i}" for i in range(n)],
        "model": ["savings"] * n,
        "version": [1] * n,
        "role": ["production"] * n,
        "captured_at": [when] * n,
        "prediction": [100.0 + i for i in range(n)],
        "probabilities": [None] * n,
        "features": {name: frame[name].tolist() for name in SAVINGS.feature_names},
    }
    stack.put(capture_key("savings", when, "test", seq), to_parquet(SAVINGS, columns, {"model": "savings"}))


def expected(manifest: dict[str, Any], frame: pd.DataFrame, predictions: list[float]) -> dict[str, float]:
    """What monitor.py computes: psi(profile proportions, histogram(profile, values)) per feature."""
    stats = manifest["feature_stats"]
    out = {n: drift.psi(p["proportions"], drift.histogram(p, frame[n].tolist())) for n, p in stats.items()}
    prof = manifest["prediction_stats"]
    out["(prediction)"] = drift.psi(prof["proportions"], drift.histogram(prof, predictions))
    return out


def test_psi_per_feature_over_the_chosen_window(stack: Stack) -> None:
    train(stack, seed=1)
    manifest = stack.get_json("models/savings/versions/000001/manifest.json")
    now = datetime.now(UTC)
    recent, old = inputs(80, seed=7, shift=1.0), inputs(30, seed=8, shift=0.0)
    put_captures(stack, recent, now - timedelta(hours=1), seq=1)
    put_captures(stack, old, now - timedelta(days=10), seq=2)

    at = open_app("drift")
    assert "Drift · savings" in [h.value for h in at.header]
    assert [m.value for m in at.metric] == ["80"], "the last 7 days: the recent file only"
    table = at.dataframe[0].value
    want = expected(manifest, recent, [100.0 + i for i in range(80)])
    assert set(table["feature"]) == set(want)
    assert list(table["psi"]) == sorted(table["psi"], reverse=True), "highest PSI first"
    for row in table.to_dict("records"):
        assert row["psi"] == pytest.approx(want[row["feature"]], abs=1e-12), row["feature"]
        assert row["values"] == 80
        assert row["level"] == ("significant" if row["psi"] > 0.25 else "shift" if row["psi"] > 0.1 else "stable")
    assert any("above 0.1 a shift worth a look, above 0.25 a significant one" in t for t in texts(at, "caption"))

    at.selectbox(key="drift-window").select(30).run()
    both = pd.concat([recent, old], ignore_index=True)
    assert [m.value for m in at.metric] == ["110"]
    table = at.dataframe[0].value
    want = expected(manifest, both, [100.0 + i for i in range(80)] + [100.0 + i for i in range(30)])
    for row in table.to_dict("records"):
        assert row["psi"] == pytest.approx(want[row["feature"]], abs=1e-12), row["feature"]


def test_no_captures_in_the_window(stack: Stack) -> None:
    train(stack, seed=1)
    at = open_app("drift")
    assert [m.value for m in at.metric] == ["0"]
    assert any(t.startswith("No captured inputs of savings in the window") for t in texts(at, "info"))
    assert not at.dataframe
