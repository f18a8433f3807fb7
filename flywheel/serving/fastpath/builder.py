"""The fast predictor: a fitted Pipeline reduced to arrays and compiled loops, proven identical to it.

    fast = compile_pipeline(pipeline, schema)     # None (reason logged) for a shape without a fast path
    fast.warm()                                    # compile before use, never on the request path
    verdict = verify(fast, pipeline, schema, golden_rows)
    if verdict.exact: serve fast.predict(columns) # else keep the Pipeline (the reference and the fallback)

`predict` takes the checked columns (flywheel/serving/inputs.py: one list per feature, NaN for a missing
number, None for a missing category) and returns what the Pipeline path returns (batcher.predict):
predictions, and for classifiers the probabilities, from one pass. Shapes: the HistGradientBoosting and
linear Pipelines of flywheel/training/pipelines.py (fastpath_trees.py, fastpath_linear.py). Both read private
attributes of scikit-learn 1.9.1's fitted estimators: `verify` is what makes them safe, on every load.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from flywheel.schema import Schema
from flywheel.serving.fastpath.base import ColumnsIn, Output, Unsupported, cache_dir

__all__ = ["FastPredictor", "Output", "Verdict", "cache_dir", "compile_or_reason", "compile_pipeline", "verify"]
log = logging.getLogger(__name__)
MAX_BOUNDARY_ROWS = 60_000  # both paths run on these at load time; ~0.5 s of Pipeline time per 20k rows
SINGLE_ROW_CHECKS = 8  # rows also checked one per call: a 1-row batch may take another BLAS kernel


class FastPredictor(Protocol):
    kind: str  # "hgb" | "linear": which compiled path

    def predict(self, columns: ColumnsIn) -> Output: ...

    def warm(self) -> None: ...

    def boundary_values(self) -> dict[str, list[Any]]: ...


def compile_or_reason(pipeline: Any, schema: Schema) -> tuple[FastPredictor | None, str]:
    """The fast predictor for this fitted Pipeline, or None and why not."""
    from flywheel.serving.fastpath.linear import LinearPredictor
    from flywheel.serving.fastpath.trees import TreePredictor

    if type(pipeline) is not Pipeline or not pipeline.steps:
        return None, f"{type(pipeline).__name__} is not a scikit-learn Pipeline"
    est = pipeline.steps[-1][1]
    try:
        if type(est) in (HistGradientBoostingRegressor, HistGradientBoostingClassifier):
            return TreePredictor(pipeline, schema), "hgb"
        if type(est) in (Ridge, LogisticRegression):
            return LinearPredictor(pipeline, schema), "linear"
        raise Unsupported(f"no fast path for {type(est).__name__}")
    except Unsupported as e:
        return None, str(e)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:  # private attributes moved
        return None, f"unexpected fitted structure: {type(e).__name__}: {e}"


def compile_pipeline(pipeline: Any, schema: Schema) -> FastPredictor | None:
    """The fast predictor, or None (the reason is logged) when this shape has none."""
    fast, reason = compile_or_reason(pipeline, schema)
    if fast is None:
        log.info("no fast path for %s: %s", schema.name, reason)
    return fast


@dataclass(frozen=True)
class Verdict:
    exact: bool
    rows_checked: int
    first_difference: str | None = None


def reference(pipeline: Any, schema: Schema, columns: ColumnsIn) -> Output:
    """The Pipeline path, as the batcher runs it (batcher.frame + predict, predict_proba)."""
    data: dict[str, Any] = {}
    for f in schema.features:
        col = columns[f.name]
        data[f.name] = np.asarray(col, dtype="float64") if f.type == "numeric" else np.asarray(col, dtype=object)
    x = pd.DataFrame(data, copy=False)
    proba = pipeline.predict_proba(x) if schema.task == "classification" else None
    return Output(np.asarray(pipeline.predict(x)), proba)


def boundary_columns(fast: FastPredictor, schema: Schema, *, seed: int = 0) -> dict[str, list[Any]]:
    """Rows where every boundary value of every feature appears (in two random contexts): split thresholds
    and their neighbours one ulp either side, every category, an unknown category, and missing values where
    the schema allows them."""
    values = fast.boundary_values()
    for f in schema.features:
        vals = list(values.get(f.name, []))
        if f.type == "categorical":
            vals += [c for c in f.categories or () if c not in vals] + ["\x00unknown-category"]
            if f.nullable:
                vals.append(None)
        else:
            vals += [v for v in (f.min, f.max) if v is not None]
            if f.nullable:
                vals.append(float("nan"))
            vals = vals or [0.0]
        values[f.name] = vals
    n = min(MAX_BOUNDARY_ROWS // 2, max(len(v) for v in values.values()))
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {}
    for name, vals in values.items():
        picked: list[Any] = []
        for _ in range(2):
            idx = rng.permutation(max(n, len(vals)))[:n] % len(vals)
            picked += [vals[i] for i in idx]
        cols[name] = picked
    return cols


def records_to_columns(schema: Schema, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Golden records -> checked-column form (a missing number is NaN, a missing category None)."""
    cols: dict[str, list[Any]] = {}
    for f in schema.features:
        raw = [r.get(f.name) for r in rows]
        cols[f.name] = [float("nan") if v is None else v for v in raw] if f.type == "numeric" else raw
    return cols


def verify(fast: FastPredictor, pipeline: Any, schema: Schema, golden_rows: Sequence[Mapping[str, Any]]) -> Verdict:
    """Run the fast path and the Pipeline on the golden rows and the model's boundary rows; any output that
    is not identical (bitwise for floats) is a difference. Also checks a few rows one per call, and the
    boundary rows in batches of each size at which the predictor switches loops (`batch_sizes`, if it has
    them) besides as one batch repeated past the largest, so every loop that can serve a request is checked."""
    golden = records_to_columns(schema, golden_rows)
    sizes: tuple[int, ...] = tuple(getattr(fast, "batch_sizes", ()))
    boundary = _repeated(boundary_columns(fast, schema), 4 * max(sizes, default=0) + 1)
    # each check: its rows, in every form a request can hand them on (one Pipeline run for all of them)
    checks: list[tuple[str, list[tuple[str, ColumnsIn]], tuple[int | None, ...]]] = [
        ("golden", [("", golden)], (None,)),
        # as a request of many rows reaches it too: each numeric column the float64 array its checks built
        ("boundary", [("", boundary), (" as arrays", _numeric_arrays(schema, boundary))], (None, *sizes)),
    ]
    for i in range(min(SINGLE_ROW_CHECKS, len(golden_rows))):
        checks.append((f"golden row {i} alone", [("", {k: v[i : i + 1] for k, v in golden.items()})], (None,)))
    checked = 0
    for label, forms, batch_sizes in checks:
        n = len(next(iter(forms[0][1].values())))
        if n == 0:
            continue
        with threadpool_limits(limits=1, user_api="openmp"):  # OpenMP's thread start-up dominates small batches
            want = reference(pipeline, schema, forms[0][1])
        for form, cols in forms:
            for size in batch_sizes:
                got = fast.predict(cols) if size is None else _in_batches(fast, cols, n, size)
                diff = _first_difference(want, got)
                if diff is not None:
                    row, what = diff
                    inputs = {k: v[row] for k, v in cols.items()}
                    where = label + form if size is None else f"{label}{form} in batches of {size}"
                    return Verdict(False, checked + n, f"{where} row {row} {inputs}: {what}")
            checked += n
    return Verdict(True, checked)


def _numeric_arrays(schema: Schema, cols: dict[str, list[Any]]) -> ColumnsIn:
    """The columns as flywheel/serving/inputs.py `checked_columns` hands a large request on: numeric ones as arrays."""
    return {f.name: np.asarray(cols[f.name], dtype=np.float64) if f.type == "numeric" else cols[f.name]
            for f in schema.features}  # fmt: skip


def _repeated(cols: dict[str, list[Any]], rows: int) -> dict[str, list[Any]]:
    """The columns repeated to at least `rows` rows (a large batch must reach the predictor's largest loop)."""
    n = len(next(iter(cols.values()), []))
    return cols if n == 0 or n >= rows else {k: v * -(-rows // n) for k, v in cols.items()}


def _in_batches(fast: FastPredictor, cols: ColumnsIn, n: int, size: int) -> Output:
    parts = [fast.predict({k: v[i : i + size] for k, v in cols.items()}) for i in range(0, n, size)]
    probabilities = [p.probabilities for p in parts if p.probabilities is not None]
    return Output(
        np.concatenate([p.predictions for p in parts]),
        np.concatenate(probabilities) if len(probabilities) == len(parts) else None,
    )


def _first_difference(want: Output, got: Output) -> tuple[int, str] | None:
    for name, a, b in (
        ("prediction", want.predictions, got.predictions),
        ("probabilities", want.probabilities, got.probabilities),
    ):
        if a is None and b is None:
            continue
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
            return 0, f"{name}: pipeline {_desc(a)} vs fast {_desc(b)}"
        # floats bitwise: that tells -0.0 from 0.0 and any NaN payload
        neq = a.view(np.uint64) != b.view(np.uint64) if a.dtype.kind == "f" else a != b
        if neq.ndim > 1:
            neq = neq.any(axis=tuple(range(1, neq.ndim)))
        rows = np.flatnonzero(neq)
        if rows.size:
            r = int(rows[0])
            return r, f"{name}: pipeline {a[r]!r} != fast {b[r]!r} ({rows.size} rows differ)"
    return None


def _desc(a: np.ndarray | None) -> str:
    return "None" if a is None else f"{a.dtype}{a.shape}"
