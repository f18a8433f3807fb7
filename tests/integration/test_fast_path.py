"""The verified fast path in a real replica: it serves only after proving itself identical to the Pipeline,
answers exactly what the Pipeline answers, says which path serves, and a fast path that differs is never used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from flywheel.jobs.retrain import retrain
from flywheel.registry.model_loading import open_version
from flywheel.registry.store import Registry
from flywheel.serving.fastpath import builder as fastpath
from flywheel.serving.host import ModelHost
from flywheel.serving.metrics import ServingMetrics
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack
from tests.helpers import csv_bytes, eventually
from tests.integration.conftest import ROW, Replica, metric, serving_version, wait_for


def _train_hgb(stack: Stack) -> int:
    stack.put("data/batch-1.csv", csv_bytes(3000, seed=1))
    settings = TrainerSettings(bucket=stack.bucket, estimators="hgb", cv_folds=2, gate_tolerance=1.0)
    outcome = retrain(settings, s3_client())
    assert outcome.status == "promoted" and outcome.production_version == 1, outcome
    return 1


def _rows(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    regions = ["north", "south", "east", "west"]
    out = []
    for i in range(n):
        row = {**ROW, "income": float(rng.uniform(500, 20000)), "expenses": float(rng.uniform(200, 15000)),
               "age": int(rng.integers(18, 90)), "debt": float(rng.uniform(0, 90000)),
               "region": regions[i % 4]}  # fmt: skip
        if i % 7 == 0:
            row["credit_score"] = None  # nullable: the missing-value route
        out.append(row)
    return out


def test_a_replica_serves_through_the_fast_path_exactly_what_the_pipeline_computes(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    _train_hgb(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    described = loopback.get(api.url + "/v1/models/savings", timeout=5).json()
    assert described["serving_path"] == "fast", described
    assert "identical on" in described["fast_path"]
    # the gauge is set just after the swap that /readyz already sees
    eventually(lambda: metric(api.url, "flywheel_model_fast_path", model="savings"), lambda v: v == 1, 60,
               what="flywheel_model_fast_path 1")  # fmt: skip
    assert metric(api.url, "flywheel_model_fast_path_fallbacks_total", model="savings") == 0

    rows = _rows(300)
    registry = Registry(s3_client(), stack.bucket, "savings")
    model = open_version(registry, 1, None).load_model()
    expected = model.predict(pd.DataFrame(rows)).tolist()
    got: list[float] = []
    for i in range(0, len(rows), 50):  # small requests take the inline fast path; 50-row ones too
        r = loopback.post(api.url + "/v1/predict", json={"instances": rows[i : i + 50]}, timeout=10)
        assert r.status_code == 200, r.text
        got.extend(r.json()["predictions"])
    big = loopback.post(api.url + "/v1/predict", json={"instances": rows * 4}, timeout=10)  # the predict thread
    assert got == expected  # bitwise: JSON floats round-trip exactly
    assert big.json()["predictions"] == expected * 4
    one = loopback.post(api.url + "/v1/predict", json={"instances": [rows[3]]}, timeout=10).json()
    assert one["predictions"] == [expected[3]] and one["model_version"] == 1


def test_a_fast_path_that_differs_from_the_pipeline_never_serves(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _train_hgb(stack)
    real = fastpath.compile_or_reason

    def one_ulp_off(model: Any, schema: Any) -> tuple[Any, str]:
        """The real compiled predictor with one numeric threshold moved by one ulp: what a routing bug would do."""
        fast, reason = real(model, schema)
        assert fast is not None, reason
        node = int(np.flatnonzero((fast.flags & 5) == 0)[0])
        fast.threshold[node] = np.nextafter(fast.threshold[node], np.inf)
        return fast, reason

    monkeypatch.setattr(fastpath, "compile_or_reason", one_ulp_off)
    metrics = ServingMetrics(CollectorRegistry())
    host = ModelHost(Registry(s3_client(), stack.bucket, "savings"), metrics)
    host.poll_once()
    served = host.current
    assert served is not None and served.version == 1, "the version still serves, through the Pipeline"
    assert served.fast is None and served.serving_path == "pipeline"
    assert served.fast_path_note.startswith("fast path differs")
    assert metrics.fast_path_fallbacks.labels(model="savings")._value.get() == 1
    assert metrics.fast_path.labels(model="savings")._value.get() == 0
