"""The trainer's live-quality metrics (lambdas/trainer/quality_metrics.py): the EMF documents Powertools prints,
each figure with its model and version (the alarm's count is the judge's: tests/integration/test_judge_lambda.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flywheel.feedback.quality_summary import MIN_LABELLED, TOLERANCE
from lambdas.trainer.quality_metrics import emit


def emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def figures(docs: list[dict[str, Any]]) -> dict[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], Any]:
    """(metric, dimension names, dimension values) -> value, for every EMF document."""
    out = {}
    for d in docs:
        (directive,) = d["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Flywheel"
        (dims,) = directive["Dimensions"]
        for m in directive["Metrics"]:
            values = tuple((k, d[k]) for k in sorted(dims))
            out[(m["Name"], tuple(sorted(dims)), values)] = (d[m["Name"]], m["Unit"])
    return out


def doc(model: str, *versions: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "task": "regression", "metric": "r2", "window_days": 7, "min_labelled": MIN_LABELLED,
            "tolerance": TOLERANCE, "computed_at": 1.0, "versions": list(versions)}  # fmt: skip


def test_each_version_carries_its_model_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    emit(doc("savings",
             {"version": 3, "live": 0.7, "holdout": 0.8, "labelled": 250, "captured": 300, "shortfall": 0.1},
             {"version": 2, "live": None, "holdout": 0.75, "labelled": 1, "captured": 9, "shortfall": None},
             {"version": 1, "live": 0.5, "holdout": 0.8, "labelled": 99, "captured": 120,
              "shortfall": 0.3}))  # fmt: skip
    got = figures(emf(capsys.readouterr().out))
    per_version = ("model", "service", "version")

    def at(v: str) -> tuple[tuple[str, str], ...]:
        return (("model", "savings"), ("service", "flywheel-trainer"), ("version", v))

    assert got == {
        ("LiveQuality", per_version, at("3")): ([0.7], "None"),
        ("LiveQualityShortfall", per_version, at("3")): ([0.1], "None"),
        ("LabelledPredictions", per_version, at("3")): ([250.0], "Count"),
        ("LabelledPredictions", per_version, at("2")): ([1.0], "Count"),  # no live figure, no shortfall
        ("LiveQuality", per_version, at("1")): ([0.5], "None"),
        ("LiveQualityShortfall", per_version, at("1")): ([0.3], "None"),
        ("LabelledPredictions", per_version, at("1")): ([99.0], "Count"),
    }
