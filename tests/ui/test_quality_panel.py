"""The models page's Live quality section against moto's S3: captures written with the capture format, labels
put under feedback/<model>/ directly; the figures shown equal scikit-learn's on the known set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, r2_score
from streamlit.testing.v1 import AppTest

from flywheel.feedback.captures import capture_key, to_parquet
from flywheel.schema import load_schema
from tests.conftest import Stack
from tests.ui.conftest import open_app, texts, train
from tests.ui.rendered import charts, marks

SAVINGS = load_schema("savings")
DAY1, DAY2 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC), datetime(2024, 5, 2, 17, 5, tzinfo=UTC)


def put_captures(stack: Stack, rows: list[tuple[str, int, datetime, float]], seq: int) -> None:
    """One capture file of (id, version, captured_at, prediction) rows of savings, as a replica writes it."""
    columns = {
        "prediction_id": [r[0] for r in rows],
        "model": ["savings"] * len(rows),
        "version": [r[1] for r in rows],
        "role": ["production"] * len(rows),
        "captured_at": [r[2] for r in rows],
        "prediction": [r[3] for r in rows],
        "probabilities": [None] * len(rows),
        "features": [dict.fromkeys(SAVINGS.feature_names) for _ in rows],
    }
    stack.put(capture_key("savings", rows[0][2], "test", seq), to_parquet(SAVINGS, columns, {"model": "savings"}))


def quality_table(at: AppTest) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if "labelled" in d.value.columns]
    assert len(found) == 1, "one live quality table"
    return found[0]


def test_a_viewer_sees_live_quality_beside_the_holdout_score(stack: Stack) -> None:
    train(stack, seed=1)
    holdout = stack.get_json("models/savings/versions/000001/manifest.json")["metrics"]["candidate"]["r2"]
    put_captures(stack, [("r1", 1, DAY1, 100.0), ("r2", 1, DAY1, 250.0), ("r9", 1, DAY1, 7.0)], seq=1)
    put_captures(stack, [("r3", 1, DAY2, 80.0)], seq=2)
    stack.put("feedback/savings/labels.csv", b"id,monthly_savings\nr1,120\nr2,200\nr3,70\nghost-1,5\n")
    stack.put("feedback/savings/z-bad.csv", b"id,monthly_savings\nr1,not-a-number\n")

    at = open_app("models")  # a viewer: read-only, shown all the same

    table = quality_table(at)
    row: dict[str, Any] = table.to_dict("records")[0]
    live_r2 = r2_score([120, 200, 70], [100, 250, 80])
    assert (row["version"], row["captured"], row["labelled"]) == (1, 4, 3)
    assert row["holdout r2"] == pytest.approx(holdout)
    assert row["live r2"] == pytest.approx(live_r2)
    assert row["live mae"] == pytest.approx(mean_absolute_error([120, 200, 70], [100, 250, 80]))
    assert row["live - holdout"] == pytest.approx(live_r2 - holdout)
    assert "**v1**: live r2 per UTC day of the capture" in texts(at, "markdown")

    (_, quality), _holdouts = charts(at)  # the live chart, then the holdout chart over versions
    points = {(r["day"], r["series"]): r["value"] for r in quality.to_dict("records")}
    assert points[("2024-05-01", "live r2")] == pytest.approx(r2_score([120, 200], [100, 250]))
    assert ("2024-05-02", "live r2") not in points, "one label on that day: R² is undefined, no point"
    assert points[("2024-05-01", "holdout r2")] == pytest.approx(holdout)
    assert points[("2024-05-02", "holdout r2")] == pytest.approx(holdout)

    notes = texts(at, "caption")
    assert any("3 matched a capture" in t for t in notes)
    assert any(t.startswith("1 label(s) match no capture yet (ghost-1)") for t in notes)
    assert any(t.startswith("Skipped label file feedback/savings/z-bad.csv") for t in texts(at, "warning"))


def test_no_labelled_predictions_yet(stack: Stack) -> None:
    train(stack, seed=1)
    at = open_app("models")
    assert any(
        t.startswith("No labelled predictions yet: 0 captured prediction(s) of savings") for t in texts(at, "info")
    )
    assert not [d for d in at.dataframe if "labelled" in d.value.columns]

    put_captures(stack, [("r1", 1, DAY1, 100.0)], seq=1)
    next(b for b in at.button if b.label == "Refresh").click().run()  # clears the cached figures
    assert any(t.startswith("No labelled predictions yet: 1 captured prediction(s)") for t in texts(at, "info"))
    assert len(at.get("vega_lite_chart")) == 1, "only the holdout chart over versions"


def test_a_one_day_chart_marks_its_point_and_draws_the_holdout(stack: Stack) -> None:
    """A line needs two days; one day of labels used to leave empty axes (issue 23, item 8)."""
    train(stack, seed=1)
    holdout = stack.get_json("models/savings/versions/000001/manifest.json")["metrics"]["candidate"]["r2"]
    put_captures(stack, [("r1", 1, DAY1, 100.0), ("r2", 1, DAY1, 250.0)], seq=1)
    stack.put("feedback/savings/labels.csv", b"id,monthly_savings\nr1,120\nr2,200\n")

    at = open_app("models")

    (spec, data), _holdouts = charts(at)
    assert any(m["type"] == "line" and m.get("point") for m in marks(spec)), "the one day is drawn as a point"
    assert any(m["type"] == "rule" for m in marks(spec)), "the holdout score is a line across the chart"
    points = {(r["day"], r["series"]): r["value"] for r in data.to_dict("records")}
    assert points == {("2024-05-01", "live r2"): pytest.approx(r2_score([120, 200], [100, 250])),
                      ("2024-05-01", "holdout r2"): pytest.approx(holdout)}  # fmt: skip
