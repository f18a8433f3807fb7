"""HistGradientBoosting Pipelines flattened into arrays and walked by a compiled loop (numba, nogil).

The routing copies scikit-learn 1.9.1's `_predict_one_from_raw_data` (ensemble/_hist_gradient_boosting/
_predictor.pyx) rule for rule: NaN follows `missing_go_to_left`; a categorical value below 0 is treated as
missing; a category in the node's left bitset goes left, a known category not in it goes right, an unknown
one follows `missing_go_to_left`; a numeric value goes left when `x <= num_threshold` in float64. Each
output starts at `0.0 + baseline[k]` and adds the trees in `_predictors` order (iteration, then class), as
`_raw_predict` does. The link's inverse and the class probabilities are the fitted loss's own functions.

Both encoders of the Pipeline are folded into one table at compile time: the Pipeline's OrdinalEncoder
(schema categories, unknown and missing -> NaN) followed by the estimator's internal OrdinalEncoder (the
codes seen in training, in sorted order; an unseen code -> NaN). These read private attributes, so the
result is trusted only after `builder.verify` has compared it with the Pipeline.

`_route` walks one row down one tree at a time. It serves only models whose trees do not fit the bit-vector
layout of bitforest.py (more than 64 leaves, more than 255 thresholds on a feature), which is derived from
these same arrays by `warm()` and evaluates every request size several times faster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from flywheel.schema import Schema
from flywheel.serving.fastpath.base import ColumnsIn, Output, Unsupported, kernel
from flywheel.serving.fastpath.bitforest import BitForest


def _route(
    x: np.ndarray,
    roots: np.ndarray,
    baseline: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    value: np.ndarray,
    flags: np.ndarray,
    bitset: np.ndarray,
    known_row: np.ndarray,
    left_bits: np.ndarray,
    known_bits: np.ndarray,
    out: np.ndarray,
) -> None:
    """Raw predictions (n, K) into `out`. flags: bit 0 leaf, bit 1 missing goes left, bit 2 categorical."""
    n_trees_per_iter = baseline.shape[0]
    n_iter = roots.shape[0] // n_trees_per_iter
    for i in range(x.shape[0]):
        for k in range(n_trees_per_iter):
            out[i, k] = 0.0
            out[i, k] += baseline[k]
    # tree by tree over all rows, as scikit-learn does (a tree's nodes stay in cache); each row's sum still
    # runs baseline, tree 1, tree 2, ... in _predictors order, so the float results are the same
    for it in range(n_iter):
        for k in range(n_trees_per_iter):
            root = roots[it * n_trees_per_iter + k]
            for i in range(x.shape[0]):
                node = root
                while not flags[node] & 1:
                    v = x[i, feature[node]]
                    miss_left = (flags[node] & 2) != 0
                    if np.isnan(v):
                        go_left = miss_left
                    elif flags[node] & 4:
                        if v < 0:
                            go_left = miss_left
                        else:
                            c = np.uint8(v)
                            if (left_bits[bitset[node], c >> 5] >> (c & 31)) & 1:
                                go_left = True
                            elif (known_bits[known_row[node], c >> 5] >> (c & 31)) & 1:
                                go_left = False
                            else:
                                go_left = miss_left
                    else:
                        go_left = v <= threshold[node]
                    node = left[node] if go_left else right[node]
                out[i, k] += value[node]


_route_compiled = kernel(_route)


def _fixed_type(obj: Any, cls: type, what: str) -> None:
    if type(obj) is not cls:
        raise Unsupported(f"{what} is {type(obj).__name__}, expected {cls.__name__}")


class TreePredictor:
    """Exact HistGradientBoosting predictions from checked columns."""

    kind = "hgb"

    def __init__(self, pipeline: Any, schema: Schema) -> None:
        prep, est = pipeline.steps[0][1], pipeline.steps[-1][1]
        if len(pipeline.steps) != 2:
            raise Unsupported(f"pipeline has {len(pipeline.steps)} steps, expected prep + model")
        _fixed_type(prep, ColumnTransformer, "preprocessing")
        if type(est) not in (HistGradientBoostingRegressor, HistGradientBoostingClassifier):
            raise Unsupported(f"estimator {type(est).__name__} is not a HistGradientBoosting model")
        self.schema, self.est = schema, est
        self.classifier = isinstance(est, HistGradientBoostingClassifier)
        outer = self._outer_columns(prep, schema)  # Pipeline-output column -> (feature name, code table | None)
        inner = self._inner_order(est, outer)  # estimator-input column -> (feature name, code table | None)
        self.columns = inner
        self._flatten(est)
        self.classes: Any = est.classes_ if self.classifier else None
        self.bits: BitForest | None = None  # derived from the arrays above by warm() (or the first predict)
        self.bits_note = ""  # why the bit-vector layout does not serve, if it does not
        self._derived = False

    # -- the two encoders --------------------------------------------------------------------------
    @staticmethod
    def _outer_columns(prep: ColumnTransformer, schema: Schema) -> list[tuple[str, dict[Any, float] | None]]:
        if prep.sparse_output_ or getattr(prep, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
            raise Unsupported("preprocessing output is not a dense numpy array")
        cols: list[tuple[str, dict[Any, float] | None]] = []
        for name, trans, names in prep.transformers_:
            if name == "remainder":
                if trans != "drop":
                    raise Unsupported("ColumnTransformer remainder is not 'drop'")
                continue
            if not isinstance(names, list) or any(n not in schema.by_name for n in names):
                raise Unsupported(f"transformer {name!r} selects columns {names!r}, not schema features by name")
            if trans == "drop":
                continue
            sl = prep.output_indices_[name]
            if sl.start != len(cols) or sl.stop - sl.start != len(names):
                raise Unsupported(f"transformer {name!r} output is not one column per input")
            if type(trans) is FunctionTransformer and trans.func is None:  # 'passthrough'
                if any(schema.by_name[n].type != "numeric" for n in names):
                    raise Unsupported("a categorical feature is passed through unencoded")
                cols += [(n, None) for n in names]
            elif type(trans) is OrdinalEncoder:
                if trans.handle_unknown != "use_encoded_value" or not _is_nan(trans.unknown_value):
                    raise Unsupported("OrdinalEncoder does not map unknown categories to NaN")
                if not _is_nan(trans.encoded_missing_value) or trans.dtype is not np.float64:
                    raise Unsupported("OrdinalEncoder does not map missing values to NaN in float64")
                if getattr(trans, "_infrequent_enabled", False):
                    raise Unsupported("OrdinalEncoder groups infrequent categories")
                for n, cats in zip(names, trans.categories_, strict=True):
                    if any(not isinstance(c, str) for c in cats):
                        raise Unsupported(f"OrdinalEncoder categories of {n!r} are not all strings")
                    cols.append((n, {c: float(i) for i, c in enumerate(cats)}))
            else:
                raise Unsupported(f"transformer {name!r} is {type(trans).__name__}")
        return cols

    @staticmethod
    def _inner_order(
        est: Any, outer: list[tuple[str, dict[Any, float] | None]]
    ) -> list[tuple[str, dict[Any, float] | None]]:
        pre = est._preprocessor
        if pre is None:
            if any(t is not None for _, t in outer):
                raise Unsupported("encoded categories reach a model without categorical features")
            return outer
        _fixed_type(pre, ColumnTransformer, "the estimator's preprocessor")
        cat_mask = np.asarray(est.is_categorical_, dtype=bool)
        if cat_mask.size != len(outer):
            raise Unsupported("estimator input width differs from the Pipeline output")
        if any((t is not None) != bool(m) for (_, t), m in zip(outer, cat_mask, strict=True)):
            raise Unsupported("categorical_features do not match the encoded columns")
        enc = pre.named_transformers_["encoder"]
        _fixed_type(enc, OrdinalEncoder, "the estimator's category encoder")
        if enc.handle_unknown != "use_encoded_value" or not _is_nan(enc.unknown_value):
            raise Unsupported("the estimator's encoder does not map unknown codes to NaN")
        if pre.output_indices_["encoder"] != slice(0, int(cat_mask.sum())):
            raise Unsupported("the estimator's preprocessor does not put categories first")
        result: list[tuple[str, dict[Any, float] | None]] = []
        cat_cols = [outer[i] for i in np.flatnonzero(cat_mask)]
        for (name, table), seen in zip(cat_cols, enc.categories_, strict=True):
            assert table is not None
            codes = {float(c): float(j) for j, c in enumerate(seen) if not _is_nan(c)}
            result.append((name, {cat: codes.get(code, math.nan) for cat, code in table.items()}))
        result += [outer[i] for i in np.flatnonzero(~cat_mask)]
        return result

    # -- the trees ---------------------------------------------------------------------------------
    def _flatten(self, est: Any) -> None:
        k = est.n_trees_per_iteration_
        if any(len(per_iter) != k for per_iter in est._predictors):
            raise Unsupported("an iteration has a different number of trees")
        known_bits, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
        nodes, lbits, roots = [], [], []
        offset = bit_offset = 0
        for per_iter in est._predictors:
            for pred in per_iter:
                nd = pred.nodes
                roots.append(offset)
                lefts = nd["left"].astype(np.int64) + offset
                rights = nd["right"].astype(np.int64) + offset
                nodes.append((nd, lefts, rights, nd["bitset_idx"].astype(np.int64) + bit_offset))
                lbits.append(np.asarray(pred.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8))
                offset += len(nd)
                bit_offset += lbits[-1].shape[0]
        nd_all = np.concatenate([n[0] for n in nodes])
        self.feature = nd_all["feature_idx"].astype(np.int64)
        self.threshold = nd_all["num_threshold"].astype(np.float64)
        self.value = nd_all["value"].astype(np.float64)
        self.left = np.concatenate([n[1] for n in nodes])
        self.right = np.concatenate([n[2] for n in nodes])
        self.bitset = np.concatenate([n[3] for n in nodes])
        leaf = nd_all["is_leaf"] != 0
        self.flags = (
            leaf.astype(np.uint8) | ((nd_all["missing_go_to_left"] != 0) << 1) | ((nd_all["is_categorical"] != 0) << 2)
        ).astype(np.uint8)
        self.feature[leaf] = 0  # a leaf's feature_idx is never read; keep it a valid column anyway
        self.known_row = np.asarray(f_idx_map, dtype=np.int64)[self.feature]
        self.left_bits = np.concatenate(lbits) if bit_offset else np.zeros((1, 8), np.uint32)
        self.known_bits = np.asarray(known_bits, dtype=np.uint32).reshape(-1, 8)
        if self.known_bits.shape[0] == 0:
            self.known_bits = np.zeros((1, 8), np.uint32)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1).copy()
        if self.baseline.shape[0] != k or np.asarray(est._baseline_prediction).dtype != np.float64:
            raise Unsupported("baseline prediction is not float64 of one value per tree of an iteration")

    # -- predicting --------------------------------------------------------------------------------
    def matrix(self, columns: ColumnsIn) -> np.ndarray:
        """Checked columns -> the estimator's input matrix (categories first, as encoded codes). Filled a
        feature at a time (contiguous) and returned transposed: (n, F), Fortran order."""
        n = len(columns[self.columns[0][0]])
        if n == 1:  # most requests: one conversion of the row, not one per feature (a third of the time)
            row = [columns[name][0] if table is None else table.get(columns[name][0], math.nan)
                   for name, table in self.columns]  # fmt: skip
            return np.array([row], dtype=np.float64)  # (1, F): C and Fortran order at once
        xt = np.empty((len(self.columns), n), dtype=np.float64)
        for j, (name, table) in enumerate(self.columns):
            col = columns[name]
            if table is None:
                xt[j] = col  # the float64 conversion np.asarray(col, dtype="float64") does for the frame
            else:  # checked categories are str or None; None and anything unknown encode as NaN
                get = table.get
                xt[j] = [get(v, math.nan) for v in col]
        return xt.T

    def raw(self, x: np.ndarray) -> np.ndarray:
        if not self._derived:
            self._derive()
        if self.bits is not None:
            return self.bits.raw(x)
        out = np.empty((x.shape[0], self.baseline.shape[0]), dtype=np.float64, order="F")
        _route_compiled()(
            np.ascontiguousarray(x, dtype=np.float64), self.roots, self.baseline, self.feature, self.threshold,
            self.left, self.right, self.value, self.flags, self.bitset, self.known_row, self.left_bits,
            self.known_bits, out,
        )  # fmt: skip
        return out

    def predict(self, columns: ColumnsIn) -> Output:
        raw = self.raw(self.matrix(columns))
        loss = self.est._loss
        if not self.classifier:
            return Output(loss.link.inverse(raw.ravel()), None)
        enc = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return Output(self.classes[enc], loss.predict_proba(raw))

    def boundary_values(self) -> dict[str, list[Any]]:
        """Per feature: every split threshold and its float64 neighbours (numeric), every category (categorical)."""
        out: dict[str, list[Any]] = {}
        split = (self.flags & 5) == 0  # not a leaf, not categorical
        for j, (name, table) in enumerate(self.columns):
            if table is not None:
                out[name] = list(table)
                continue
            t = np.unique(self.threshold[split & (self.feature == j)])
            near = np.concatenate([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)])
            out[name] = np.unique(near[np.isfinite(near)]).tolist()
        return out

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The largest row count each path serves but the last: verify() checks the boundary rows in each. One row
        has a path of its own (`matrix`), then each of the bit-vector loops."""
        if not self._derived:
            self._derive()
        return (1, *self.bits.batch_sizes) if self.bits is not None else (1,)

    def _derive(self) -> None:
        try:
            self.bits, self.bits_note = BitForest(self, len(self.columns)), ""
        except Unsupported as e:
            self.bits, self.bits_note = None, str(e)
        self._derived = True

    def warm(self) -> None:
        """Derive the bit-vector layout from the arrays as they are now, and compile (or load from the cache)
        the loop for this model's array types. What verify() checks after this is what serves."""
        self._derive()
        for n in (1, 2):  # the descent's (n, K) output is C-contiguous for one row, F for more (K > 1)
            self.raw(np.full((n, len(self.columns)), math.nan))


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
