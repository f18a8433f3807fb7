"""Candidate versions for the rollout tests, importable by the replicas (they run from the repository root)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from flywheel.registry.manifest import dump_model, frame_from_records, load_model, outputs, sha256
from flywheel.registry.store import Registry
from flywheel.schema import Schema

LIMIT = 8000.0


class FailsAbove(RegressorMixin, BaseEstimator):
    """Production's model that raises on any row whose `column` exceeds `limit`: a version that passed its
    golden rows and fails on live inputs the holdout did not exercise."""

    def __init__(self, inner: Any = None, column: str = "income", limit: float = LIMIT) -> None:
        self.inner, self.column, self.limit = inner, column, limit

    def fit(self, x: Any, y: Any = None) -> FailsAbove:
        return self

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        if (np.asarray(x[self.column], dtype="float64") > self.limit).any():
            raise ValueError(f"{self.column} above {self.limit:g}")
        result: np.ndarray = self.inner.predict(x)
        return result


def publish_derived(registry: Registry, base: int, wrap: bool) -> int:
    """A new approved version built from v`base`'s model: wrapped in FailsAbove (`wrap`) or the same model
    (identical predictions); golden rows kept below the limit so it verifies and loads."""
    manifest = registry.manifest(base)
    model = load_model(registry.model_bytes(base), manifest["sha256"])
    if wrap:
        model = FailsAbove(model)
    schema = Schema.model_validate(manifest["schema"])
    inputs = [r for r in manifest["golden"]["inputs"] if float(r["income"]) <= LIMIT][:4]
    assert inputs, "no golden row below the limit"
    data = dump_model(model)
    golden = {"inputs": inputs, "outputs": outputs(schema, model, frame_from_records(schema, inputs))}
    derived = {**manifest, "sha256": sha256(data), "size_bytes": len(data), "golden": golden, "status": "promoted"}
    return registry.publish(data, derived)
