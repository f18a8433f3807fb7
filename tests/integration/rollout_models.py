"""Candidate versions for the rollout tests, importable by the replicas (they run from the repository root)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from flywheel.registry.manifest import dump_model, frame_from_records, outputs, sha256
from flywheel.registry.model_loading import open_version
from flywheel.registry.store import Registry
from flywheel.release import rollout_actions
from flywheel.release.rollout_state import Rollout, Thresholds
from flywheel.schema import Schema
from tests.conftest import Stack

MODEL = "savings"
#: a rollout the judge may decide at once (tests plant its statistics)
QUICK = Thresholds(min_requests=100, min_seconds=0)
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
    model = open_version(registry, base, None).load_model()
    if wrap:
        model = FailsAbove(model)
    schema = Schema.model_validate(manifest["schema"])
    inputs = [r for r in manifest["golden"]["inputs"] if float(r["income"]) <= LIMIT][:4]
    assert inputs, "no golden row below the limit"
    data = dump_model(model)
    golden = {"inputs": inputs, "outputs": outputs(schema, model, frame_from_records(schema, inputs))}
    derived = {**manifest, "sha256": sha256(data), "size_bytes": len(data), "golden": golden, "status": "promoted"}
    return registry.publish(data, derived)


def running(stack: Stack, thresholds: Thresholds = QUICK) -> tuple[Registry, Rollout]:
    """Model savings with v1 in production and a canary of v2 at 0.5 (manifests only: nothing is served)."""
    reg = Registry(stack.s3, stack.bucket, MODEL)
    for v in (1, 2):
        stack.put(reg.version_key(v, "manifest.json"), json.dumps({"version": v, "status": "promoted"}).encode())
    reg.move_alias(1, None, actor="trainer", reason="first version")
    return reg, rollout_actions.begin(reg, 2, actor="trainer", mode="canary", share=0.5, thresholds=thresholds)
