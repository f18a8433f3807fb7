"""The fast path returns exactly what the Pipeline returns, and verify() catches it when it does not."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from flywheel.data.sample_data import churn, savings
from flywheel.data.validation import validate_batch
from flywheel.schema import Schema, load_schema
from flywheel.serving.fastpath import base as fastpath_base
from flywheel.serving.fastpath.builder import (
    _first_difference,
    compile_or_reason,
    compile_pipeline,
    reference,
    verify,
)
from flywheel.training.pipelines import ESTIMATORS, naive_baseline

GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {"savings": savings, "churn": churn}
UNKNOWN = "\x00not-a-category"
TREES = 60  # training.py's HistGradientBoosting with fewer iterations: the same shape, a faster test


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """One OpenMP thread, as the trainer and the bench run: on a shared 2-core machine thread start-up
    dominates scikit-learn's small predict calls. Outputs do not depend on it."""
    with threadpool_limits(limits=1):
        yield


def _typed(schema: Schema, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame the trainer fits on: validated, float64 numbers, object categories (None = missing)."""
    return validate_batch(frame.to_csv(index=False).encode(), "batch.csv", schema)


@pytest.fixture(scope="module", params=["savings/hgb", "churn/hgb", "savings/linear", "churn/linear"])
def trained(request: pytest.FixtureRequest) -> tuple[Schema, Pipeline]:
    dataset, estimator = request.param.split("/")
    schema = load_schema(dataset)
    frame = _typed(schema, GENERATORS[dataset](2_000, seed=1))
    model = ESTIMATORS[estimator](schema)
    if estimator == "hgb":
        model.set_params(model__max_iter=TREES)
    return schema, model.fit(frame[list(schema.feature_names)], frame[schema.target.name])


def _rows(schema: Schema, n: int) -> dict[str, list[Any]]:
    """n rows in checked-column form, with missing numbers, missing and unknown categories mixed in."""
    frame = _typed(schema, GENERATORS[schema.name](n, seed=7, drift=0.5))
    rng = np.random.default_rng(3)
    cols: dict[str, list[Any]] = {}
    for f in schema.features:
        col = frame[f.name].tolist()
        for i in np.flatnonzero(rng.random(n) < 0.05):
            col[i] = math.nan if f.type == "numeric" else None
        if f.type == "categorical":
            for i in np.flatnonzero(rng.random(n) < 0.03):
                col[i] = UNKNOWN
        cols[f.name] = col
    return cols


def _golden(schema: Schema) -> list[dict[str, Any]]:
    frame = GENERATORS[schema.name](20, seed=11).drop(columns=[schema.target.name])
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def test_identical_outputs_on_10k_rows(trained: tuple[Schema, Pipeline]) -> None:
    schema, model = trained
    fast = compile_pipeline(model, schema)
    assert fast is not None
    fast.warm()
    cols = _rows(schema, 10_000)
    want, got = reference(model, schema, cols), fast.predict(cols)
    assert _first_difference(want, got) is None
    assert want.predictions.dtype == got.predictions.dtype
    assert np.array_equal(want.predictions, got.predictions)
    if schema.task == "classification":
        assert want.probabilities is not None and got.probabilities is not None
        assert want.probabilities.tobytes() == got.probabilities.tobytes()
    else:
        assert got.probabilities is None
        assert want.predictions.tobytes() == got.predictions.tobytes()
    one = {k: v[:1] for k, v in cols.items()}  # a lone row, as a single request sends it
    assert _first_difference(reference(model, schema, one), fast.predict(one)) is None


def test_verify_passes_golden_and_boundary_rows(trained: tuple[Schema, Pipeline]) -> None:
    schema, model = trained
    fast = compile_pipeline(model, schema)
    assert fast is not None
    verdict = verify(fast, model, schema, _golden(schema))
    assert verdict.exact, verdict.first_difference
    assert verdict.rows_checked > 20


def _hgb(dataset: str) -> tuple[Schema, Pipeline, Any]:
    schema = load_schema(dataset)
    frame = _typed(schema, GENERATORS[dataset](1_500, seed=2))
    model = ESTIMATORS["hgb"](schema)
    model.set_params(model__max_iter=40)
    model.fit(frame[list(schema.feature_names)], frame[schema.target.name])
    fast = compile_pipeline(model, schema)
    assert fast is not None
    return schema, model, fast


@pytest.mark.parametrize("dataset", ["savings", "churn"])
def test_verify_catches_a_threshold_one_ulp_off(dataset: str) -> None:
    schema, model, fast = _hgb(dataset)
    assert verify(fast, model, schema, _golden(schema)).exact
    numeric_splits = np.flatnonzero((fast.flags & 5) == 0)
    node = int(numeric_splits[0])  # the first tree's root or near it: every boundary row passes there
    fast.threshold[node] = np.nextafter(fast.threshold[node], np.inf)
    fast.warm()  # as the host does after building: the bit-vector layout is derived from the arrays here
    verdict = verify(fast, model, schema, _golden(schema))
    assert not verdict.exact
    assert verdict.first_difference and "!=" in verdict.first_difference


def test_verify_catches_a_changed_leaf_value() -> None:
    schema, model, fast = _hgb("savings")
    last_tree = np.arange(int(fast.roots[-1]), len(fast.value))
    fast.value[last_tree] += 1e-3
    fast.warm()
    verdict = verify(fast, model, schema, _golden(schema))
    assert not verdict.exact
    assert verdict.first_difference and verdict.first_difference.startswith("golden row 0")


def test_unsupported_shapes_return_none_with_a_reason() -> None:
    schema = load_schema("savings")
    frame = _typed(schema, savings(300, seed=4))
    x, y = frame[list(schema.feature_names)], frame[schema.target.name]
    dummy = naive_baseline(schema).fit(x, y)
    assert compile_pipeline(dummy, schema) is None
    assert "DummyRegressor" in compile_or_reason(dummy, schema)[1]
    forest = Pipeline([("prep", ESTIMATORS["linear"](schema).steps[0][1]), ("model", RandomForestRegressor(3))])
    fast, reason = compile_or_reason(forest.fit(x, y), schema)
    assert fast is None and "RandomForestRegressor" in reason
    assert compile_or_reason(object(), schema) == (None, "object is not a scikit-learn Pipeline")


def test_numba_cache_moves_to_tmp_when_the_package_is_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", "")
    monkeypatch.setenv("TMPDIR", "/tmp")
    monkeypatch.setattr(fastpath_base.os, "access", lambda *_: False)
    assert fastpath_base.cache_dir().endswith("flywheel-numba")
    assert os.environ["NUMBA_CACHE_DIR"].endswith("flywheel-numba")


def test_trainer_side_imports_do_not_load_numba() -> None:
    code = (
        "import sys, flywheel.training.pipelines, flywheel.serving.fastpath.builder, flywheel.serving.fastpath.trees;"
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
