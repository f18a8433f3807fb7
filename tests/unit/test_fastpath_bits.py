"""The bit-vector loops (fastpath/bitforest.py) return exactly what the Pipeline returns at every request size,
and verify() checks each loop before a version serves."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from flywheel.schema import Schema, load_schema
from flywheel.serving.fastpath import bitforest, trees
from flywheel.serving.fastpath.base import Output, Unsupported
from flywheel.serving.fastpath.builder import (
    _first_difference,
    _in_batches,
    _repeated,
    compile_pipeline,
    reference,
    verify,
)
from flywheel.serving.fastpath.trees import TreePredictor
from flywheel.training.pipelines import ESTIMATORS
from tests.unit.test_fastpath import GENERATORS, TREES, _golden, _rows, _typed

LOOPS = {1: 4, 32: 32, 64: 64, 128: 10_000}  # block -> a batch size that runs it


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    with threadpool_limits(limits=1):
        yield


def _fit(dataset: str, rows: int = 2_000, classes: int = 0, **params: Any) -> tuple[Schema, Pipeline, TreePredictor]:
    schema = load_schema(dataset)
    frame = _typed(schema, GENERATORS[dataset](rows, seed=1))
    y = frame[schema.target.name]
    if classes:  # a third class from the first feature: a multiclass model (one tree per class per iteration)
        y = y.where(frame[schema.numeric[0]] < frame[schema.numeric[0]].quantile(0.7), "third")
    model = ESTIMATORS["hgb"](schema).set_params(model__max_iter=TREES, **{f"model__{k}": v for k, v in params.items()})
    model.fit(frame[list(schema.feature_names)], y)
    fast = compile_pipeline(model, schema)
    assert isinstance(fast, TreePredictor)
    fast.warm()
    return schema, model, fast


@pytest.fixture(scope="module", params=["savings", "churn"])
def fitted(request: pytest.FixtureRequest) -> tuple[Schema, Pipeline, TreePredictor]:
    return _fit(request.param)


def _same(want: Output, got: Output) -> None:
    assert _first_difference(want, got) is None
    assert want.predictions.dtype == got.predictions.dtype and np.array_equal(want.predictions, got.predictions)
    if want.probabilities is None:
        assert got.probabilities is None and want.predictions.tobytes() == got.predictions.tobytes()
    else:
        assert got.probabilities is not None and want.probabilities.tobytes() == got.probabilities.tobytes()


def test_every_loop_is_identical_to_the_pipeline_on_10k_rows(fitted: tuple[Schema, Pipeline, TreePredictor]) -> None:
    """Regressor (savings) and classifier (churn), missing numbers, missing and unknown categories."""
    schema, model, fast = fitted
    assert fast.bits is not None, fast.bits_note
    cols = _rows(schema, 10_000)
    want = reference(model, schema, cols)
    for block, size in LOOPS.items():
        assert bitforest.block_for(size) == block
        _same(want, fast.predict(cols) if size == 10_000 else _in_batches(fast, cols, 10_000, size))
    bits, fast.bits = fast.bits, None  # the one-row-one-tree descent, for trees that do not fit
    try:
        _same(want, fast.predict(cols))
    finally:
        fast.bits = bits


def _identical_in_every_loop(schema: Any, model: Any, fast: Any) -> None:
    cols = _rows(schema, 3_000)
    want = reference(model, schema, cols)
    for size in LOOPS.values():
        _same(want, _in_batches(fast, cols, 3_000, size))
    assert verify(fast, model, schema, _golden(schema)).exact


def test_a_multiclass_model_is_identical_in_every_loop() -> None:
    schema, model, fast = _fit("churn", classes=3)
    assert fast.bits is not None and fast.baseline.shape == (3,)
    _identical_in_every_loop(schema, model, fast)


def test_trees_of_33_to_64_leaves_use_64_bit_masks() -> None:
    schema, model, fast = _fit("savings", rows=3_000, max_leaf_nodes=60, min_samples_leaf=5)
    assert fast.bits is not None and fast.bits.mask.dtype == np.uint64
    assert int(np.diff(fast.bits.tree_lo[1]).max()) > 32
    _identical_in_every_loop(schema, model, fast)


def test_trees_of_more_than_64_leaves_keep_the_descent() -> None:
    schema, model, fast = _fit("savings", rows=3_000, max_leaf_nodes=90, min_samples_leaf=5)
    assert fast.bits is None and "leaves" in fast.bits_note
    assert fast.batch_sizes == (1,)  # one row alone: a path of its own (TreePredictor.matrix)
    verdict = verify(fast, model, schema, _golden(schema))
    assert verdict.exact, verdict.first_difference


@pytest.mark.parametrize("block", sorted(LOOPS))
def test_verify_checks_every_loop(fitted: tuple[Schema, Pipeline, TreePredictor], block: int, monkeypatch: Any) -> None:
    """A loop that is wrong only at its own batch sizes never serves: verify() ran it."""
    schema, model, fast = fitted
    assert fast.bits is not None
    right = fast.bits.raw

    def wrong_in_one_loop(x: np.ndarray) -> np.ndarray:
        out = right(x)
        if bitforest.block_for(x.shape[0]) == block:
            out[-1, 0] = np.nextafter(out[-1, 0], np.inf)
        return out

    monkeypatch.setattr(fast.bits, "raw", wrong_in_one_loop)
    verdict = verify(fast, model, schema, _golden(schema))
    assert not verdict.exact and verdict.first_difference
    if block == 64:  # neither the golden nor the boundary batch nor a single row runs it
        assert "in batches of 64" in verdict.first_difference


def test_verify_checks_the_one_row_path_on_the_boundary_rows(
    fitted: tuple[Schema, Pipeline, TreePredictor], monkeypatch: Any
) -> None:
    """A one-row matrix that is wrong only on a boundary value never serves: verify() ran the boundary rows alone."""
    schema, model, fast = fitted
    right = fast.matrix
    name = next(n for n, table in fast.columns if table is None)
    cuts = set(fast.boundary_values()[name])
    golden = {row[name] for row in _golden(schema)}

    def wrong_for_one_row_on_a_cut(columns: Any) -> np.ndarray:
        x = right(columns)
        value = columns[name][0]
        if x.shape[0] == 1 and value in cuts and value not in golden:  # a boundary value no golden row has
            x = x.copy()
            x[0, [n for n, _ in fast.columns].index(name)] = np.nextafter(float(value), np.inf)
        return x

    monkeypatch.setattr(fast, "matrix", wrong_for_one_row_on_a_cut)
    verdict = verify(fast, model, schema, _golden(schema))
    assert not verdict.exact and "in batches of 1 " in verdict.first_difference, verdict.first_difference


def _root_cut(fast: TreePredictor) -> int:
    """Index in bits.cuts of the threshold of the first numeric split of tree 0."""
    assert fast.bits is not None
    node = int(np.flatnonzero((fast.flags & 5) == 0)[0])
    f = int(fast.feature[node])
    return int(fast.bits.feat[0, f] + np.searchsorted(fast.bits.cuts[fast.bits.feat[0, f] :], fast.threshold[node]))


def test_verify_catches_a_corrupted_cut_or_leaf_in_the_bit_layout(fitted: tuple[Schema, Pipeline, Any]) -> None:
    schema, model, fast = fitted
    assert fast.bits is not None
    assert verify(fast, model, schema, _golden(schema)).exact
    i = _root_cut(fast)
    cut = fast.bits.cuts[i]
    fast.bits.cuts[i] = np.nextafter(cut, np.inf)  # the threshold one ulp off, as the bit layout holds it
    try:
        verdict = verify(fast, model, schema, _golden(schema))
        assert not verdict.exact and verdict.first_difference and "!=" in verdict.first_difference
    finally:
        fast.bits.cuts[i] = cut
    leaves = fast.bits.leaf_value.copy()
    fast.bits.leaf_value[int(fast.bits.tree_lo[1, -2]) :] += 1e-3  # the last tree's leaves
    try:
        verdict = verify(fast, model, schema, _golden(schema))
        assert not verdict.exact and verdict.first_difference
        assert verdict.first_difference.startswith("golden row 0")
    finally:
        fast.bits.leaf_value[:] = leaves
    assert verify(fast, model, schema, _golden(schema)).exact


def _does_not_fit(*_: Any) -> None:
    raise Unsupported("forced")


def _signatures() -> list[Any]:
    return [*bitforest._compiled().signatures, *cast(Any, trees._route_compiled()).signatures]


@pytest.mark.parametrize("classes", [0, 3])
@pytest.mark.parametrize("descent", [False, True])
def test_nothing_compiles_on_the_request_path(classes: int, descent: bool, monkeypatch: Any) -> None:
    """warm() compiles every signature a request can need, for one output or several (multiclass)."""
    schema, _, fast = _fit("churn", rows=1_000, classes=classes)
    if descent:  # as for trees that do not fit the bit-vector layout
        monkeypatch.setattr(trees, "BitForest", _does_not_fit)
        fast.warm()
        assert fast.bits is None and fast.bits_note == "forced"
    compiled = _signatures()
    cols = _rows(schema, 700)
    for n in (1, 4, 5, 33, 65, 700):
        fast.predict({k: v[:n] for k, v in cols.items()})
    assert _signatures() == compiled


def test_verify_repeats_a_small_boundary_set_past_the_largest_switch() -> None:
    cols: dict[str, list[Any]] = {"a": [1.0, 2.0, 3.0], "b": ["x", None, "y"]}
    longer = _repeated(cols, 4 * max(bitforest.BATCH_SIZES) + 1)
    assert len(longer["a"]) > 4 * 64 and longer["b"][:6] == ["x", None, "y", "x", None, "y"]
    assert bitforest.block_for(len(longer["a"])) == 128
    assert _repeated(cols, 2) is cols
