from __future__ import annotations

from flywheel.training.gate import decide


def test_first_model_must_beat_the_baseline() -> None:
    assert decide("regression", {"r2": 0.8}, {"r2": 0.0}, None, tolerance=0.01).promoted
    d = decide("regression", {"r2": -0.1}, {"r2": 0.0}, None, tolerance=0.01)
    assert not d.promoted and "naive baseline" in d.reasons[0]


def test_tolerance_against_production() -> None:
    assert decide("regression", {"r2": 0.795}, {"r2": 0.0}, {"r2": 0.80}, tolerance=0.01).promoted
    d = decide("regression", {"r2": 0.78}, {"r2": 0.0}, {"r2": 0.80}, tolerance=0.01)
    assert d.status == "rejected" and any("production 0.8000" in r for r in d.reasons)


def test_absolute_floor_and_classification_metric() -> None:
    d = decide(
        "classification", {"balanced_accuracy": 0.6}, {"balanced_accuracy": 0.5}, None, tolerance=0, min_score=0.7
    )
    assert not d.promoted and d.primary_metric == "balanced_accuracy" and "floor 0.7" in d.reasons[0]
