"""Captures, manifests and label files for the feedback-arrival tests (test_feedback_arrival*.py,
test_feedback_wait.py); their `bucket` fixture is in conftest.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flywheel.feedback.captures import capture_key, to_parquet
from flywheel.schema import load_schema
from tests.conftest import Stack
from tests.integration.conftest import ROW

SAVINGS = load_schema("savings")
SUMMARY = "models/savings/live-quality.json"


def put_captures(stack: Stack, predictions: dict[str, float], version: int = 1, seq: int = 1) -> None:
    """Captured predictions of `version` now (inside the live window), inputs varied around ROW."""
    ids = list(predictions)
    rows = [{**ROW, "income": 2000.0 + 50 * i, "age": 25 + i % 40} for i in range(len(ids))]
    at = datetime.now(UTC)
    body = to_parquet(SAVINGS, {"prediction_id": ids, "model": ["savings"] * len(ids), "version": [version] * len(ids),
                                "role": ["production"] * len(ids), "captured_at": [at] * len(ids),
                                "prediction": list(predictions.values()), "probabilities": [None] * len(ids),
                                "features": {f.name: [r[f.name] for r in rows] for f in SAVINGS.features}},
                      {"model": "savings"})  # fmt: skip
    stack.put(capture_key("savings", at, "pod-a", seq), body)


def put_manifest(stack: Stack, version: int, score: float) -> None:
    doc = {"gate": {"primary_metric": "r2"}, "metrics": {"candidate": {"r2": score}}, "status": "promoted"}
    stack.put(f"models/savings/versions/{version:06d}/manifest.json", json.dumps(doc).encode())


def labels_csv(labels: dict[str, float]) -> bytes:
    return ("id,monthly_savings\n" + "".join(f"{k},{v}\n" for k, v in labels.items())).encode()
