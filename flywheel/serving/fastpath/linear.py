"""Linear Pipelines (median imputer + StandardScaler, constant imputer + one-hot, Ridge or LogisticRegression)
reduced to numpy on checked columns, in scikit-learn 1.9.1's float order so the results are bitwise equal:
`(x - mean_) / scale_` elementwise, the one-hot block after the numeric block as the ColumnTransformer
stacks them, then the estimator's own expression (`X @ coef_ + intercept_`, or `X @ coef_.T + intercept_`)
on a C-ordered float64 matrix of the same shape, so the same BLAS routine runs. Probabilities follow
`_predict_proba_lr` (binary: expit, then [1 - p, p]) or softmax (multiclass); labels follow the same scores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.extmath import softmax

from flywheel.schema import Schema
from flywheel.serving.fastpath.base import ColumnsIn, Output, Unsupported


def _steps(trans: Any, kinds: tuple[type, ...], what: str) -> list[Any]:
    steps = [s for _, s in trans.steps] if type(trans) is Pipeline else [trans]
    if tuple(type(s) for s in steps) != kinds:
        raise Unsupported(f"{what} is {[type(s).__name__ for s in steps]}, expected {[k.__name__ for k in kinds]}")
    return steps


class LinearPredictor:
    """Exact Ridge / LogisticRegression predictions from checked columns."""

    kind = "linear"

    def __init__(self, pipeline: Any, schema: Schema) -> None:
        if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
            raise Unsupported("not a two-step Pipeline (prep, model)")
        prep, est = pipeline.steps[0][1], pipeline.steps[1][1]
        if type(prep) is not ColumnTransformer or prep.sparse_output_:
            raise Unsupported("preprocessing is not a dense ColumnTransformer")
        if type(est) not in (Ridge, LogisticRegression):
            raise Unsupported(f"estimator {type(est).__name__} has no linear fast path")
        self.est, self.classifier = est, type(est) is LogisticRegression
        self.numeric: list[tuple[str, float, float, float]] = []  # name, fill, mean, scale
        self.onehot: list[tuple[str, dict[str, int]]] = []  # name, category -> output column
        width = self.num_start = 0
        for name, trans, names in prep.transformers_:
            if name == "remainder":
                if trans != "drop":
                    raise Unsupported("ColumnTransformer remainder is not 'drop'")
                continue
            if trans == "drop" or not names:
                continue
            sl = prep.output_indices_[name]
            if sl.start != width:
                raise Unsupported(f"transformer {name!r} output is out of order")
            if any(n not in schema.by_name for n in names):
                raise Unsupported(f"transformer {name!r} selects columns that are not schema features")
            if schema.by_name[names[0]].type == "numeric":
                if self.numeric:
                    raise Unsupported("more than one numeric transformer")
                self._numeric(trans, names)
                self.num_start = sl.start
            else:
                self._categorical(trans, names, width)
            width = sl.stop
        if width != est.n_features_in_:
            raise Unsupported("the Pipeline output width differs from the estimator's input")
        self.width = width
        coef = np.asarray(est.coef_)
        if coef.dtype != np.float64 or (not self.classifier and coef.ndim != 1):
            raise Unsupported("coefficients are not float64 of one target")
        self.classes: Any = est.classes_ if self.classifier else None
        self._num_names = [name for name, _, _, _ in self.numeric]
        self._fill, self._mean, self._scale = (
            np.array([t[i] for t in self.numeric], dtype=np.float64) for i in (1, 2, 3)
        )

    def _numeric(self, trans: Any, names: list[str]) -> None:
        imp, scaler = _steps(trans, (SimpleImputer, StandardScaler), "numeric preprocessing")
        if imp.strategy not in ("median", "mean") or imp.add_indicator or not _is_nan(imp.missing_values):
            raise Unsupported("numeric imputer is not a plain NaN imputer")
        stats = np.asarray(imp.statistics_, dtype=np.float64)
        if np.isnan(stats).any():
            raise Unsupported("an all-missing numeric column (the imputer drops it)")
        if not (scaler.with_mean and scaler.with_std):
            raise Unsupported("StandardScaler without centring or scaling")
        for n, fill, mean, scale in zip(names, stats, scaler.mean_, scaler.scale_, strict=True):
            self.numeric.append((n, float(fill), float(mean), float(scale)))

    def _categorical(self, trans: Any, names: list[str], start: int) -> None:
        imp, ohe = _steps(trans, (SimpleImputer, OneHotEncoder), "categorical preprocessing")
        if imp.strategy != "constant" or imp.add_indicator:
            raise Unsupported("categorical imputer is not a constant fill")
        if ohe.handle_unknown != "ignore" or ohe.drop_idx_ is not None or getattr(ohe, "_infrequent_enabled", False):
            raise Unsupported("OneHotEncoder drops, groups or errors on categories")
        if ohe.sparse_output or np.dtype(ohe.dtype) != np.float64:
            raise Unsupported("OneHotEncoder output is not dense float64")
        col = start
        for n, cats in zip(names, ohe.categories_, strict=True):
            if any(not isinstance(c, str) for c in cats) or imp.fill_value in set(cats):
                raise Unsupported(f"categories of {n!r} are not plain strings distinct from the missing fill")
            self.onehot.append((n, {c: col + i for i, c in enumerate(cats)}))
            col += len(cats)

    def matrix(self, columns: ColumnsIn) -> np.ndarray:
        """Checked columns -> the estimator's input matrix, as the ColumnTransformer builds it."""
        n = len(columns[self.numeric[0][0] if self.numeric else self.onehot[0][0]])
        x = np.zeros((n, self.width), dtype=np.float64)
        if self.numeric:
            v = np.array([columns[name] for name in self._num_names], dtype=np.float64).T
            # SimpleImputer, then StandardScaler's `X -= mean_; X /= scale_`: the same elementwise float ops
            x[:, self.num_start : self.num_start + v.shape[1]] = (
                np.where(np.isnan(v), self._fill, v) - self._mean
            ) / self._scale
        for name, table in self.onehot:
            get = table.get
            hot = np.array([get(v, -1) for v in columns[name]], dtype=np.int64)
            rows = np.flatnonzero(hot >= 0)
            x[rows, hot[rows]] = 1.0
        return x

    def predict(self, columns: ColumnsIn) -> Output:
        x, est = self.matrix(columns), self.est
        if not self.classifier:
            return Output(x @ est.coef_ + est.intercept_, None)
        scores = x @ est.coef_.T + est.intercept_
        if scores.shape[1] == 1:
            scores = scores.reshape(-1)
            prob = expit(scores)
            return Output(self.classes[(scores > 0).astype(int)], np.stack([1 - prob, prob], axis=1))
        return Output(self.classes[np.argmax(scores, axis=1)], softmax(scores.copy(), copy=False))

    def boundary_values(self) -> dict[str, list[Any]]:
        """Per feature: the fill, the mean and their float64 neighbours, 0 (numeric); every category."""
        out: dict[str, list[Any]] = {name: list(table) for name, table in self.onehot}
        for name, fill, mean, _ in self.numeric:
            v = np.array([0.0, fill, mean])
            out[name] = np.unique(np.concatenate([v, np.nextafter(v, -np.inf), np.nextafter(v, np.inf)])).tolist()
        return out

    def warm(self) -> None:
        """Nothing to compile: numpy only."""


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
