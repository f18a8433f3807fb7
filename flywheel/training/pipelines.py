"""Training: a scikit-learn Pipeline per candidate, chosen by cross-validation, scored on a fixed holdout."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from flywheel.schema import Schema
from flywheel.training.gate import PRIMARY_METRIC

SEED = 0
CV_MAX_ROWS = 200_000  # model selection on a fixed subsample keeps 1M-row retrains inside a Lambda
_SKLEARN_SCORING = {"r2": "r2", "balanced_accuracy": "balanced_accuracy"}


def _preprocess(schema: Schema, scale: bool) -> ColumnTransformer:
    numeric: list[Any] = [SimpleImputer(strategy="median")]
    if scale:
        numeric.append(StandardScaler())
    categories = [list(schema.by_name[c].categories or ()) for c in schema.categorical]
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="__missing__"),
        OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [("num", make_pipeline(*numeric), schema.numeric), ("cat", categorical, schema.categorical)],
        verbose_feature_names_out=False,
    )


def _linear(schema: Schema) -> Pipeline:
    est = Ridge(alpha=1.0) if schema.task == "regression" else LogisticRegression(max_iter=2000)
    return Pipeline([("prep", _preprocess(schema, scale=True)), ("model", est)])


def _hgb(schema: Schema) -> Pipeline:
    """Gradient boosting on raw numbers (it handles NaN) and native categories: a lighter preprocessing
    step than one-hot, which matters at serving time where it is paid on every predict call."""
    categories = [list(schema.by_name[c].categories or ()) for c in schema.categorical]
    encoder = OrdinalEncoder(
        categories=categories, handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    prep = ColumnTransformer(
        [("num", "passthrough", schema.numeric), ("cat", encoder, schema.categorical)],
        verbose_feature_names_out=False,
    )
    n_num, n_cat = len(schema.numeric), len(schema.categorical)
    kw: dict[str, Any] = {
        "max_iter": 300,
        "learning_rate": 0.08,
        "random_state": SEED,
        "categorical_features": list(range(n_num, n_num + n_cat)) or None,
    }
    est = HistGradientBoostingRegressor(**kw) if schema.task == "regression" else HistGradientBoostingClassifier(**kw)
    return Pipeline([("prep", prep), ("model", est)])


def naive_baseline(schema: Schema) -> Pipeline:
    est = DummyRegressor(strategy="mean") if schema.task == "regression" else DummyClassifier(strategy="prior")
    return Pipeline([("prep", _preprocess(schema, scale=False)), ("model", est)])


ESTIMATORS: dict[str, Callable[[Schema], Pipeline]] = {"linear": _linear, "hgb": _hgb}


def holdout_mask(frame: pd.DataFrame, fraction: float) -> np.ndarray:
    """A row is in the holdout by a hash of its content: fixed across retrains, independent of order."""
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return (h % 10_000) < int(fraction * 10_000)


def score(schema: Schema, model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The holdout metrics recorded in the manifest; the primary one drives the gate."""
    pred = model.predict(x)
    if schema.task == "regression":
        return {
            "r2": float(r2_score(y, pred)),
            "mae": float(mean_absolute_error(y, pred)),
            "rmse": float(root_mean_squared_error(y, pred)),
        }
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro")),
    }
    if hasattr(model, "predict_proba"):
        out["log_loss"] = float(log_loss(y, model.predict_proba(x), labels=list(model.classes_)))
    return out


@dataclass
class Trained:
    model: Pipeline
    estimator: str
    cv_scores: dict[str, float]


def fit_candidate(
    schema: Schema, x: pd.DataFrame, y: pd.Series, estimators: list[str], folds: int, threads: int
) -> Trained:
    """Pick the estimator with the best mean CV score on the training part, then refit it on all of it."""
    metric = _SKLEARN_SCORING[PRIMARY_METRIC[schema.task]]
    n = len(x)
    sub = np.random.default_rng(SEED).permutation(n)[:CV_MAX_ROWS] if n > CV_MAX_ROWS else np.arange(n)
    xs, ys = x.iloc[sub], y.iloc[sub]
    if schema.task == "classification":
        smallest = int(ys.value_counts().min())
        k = max(2, min(folds, smallest))
        cv: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED)
    else:
        cv = KFold(n_splits=min(folds, max(2, len(xs) // 2)), shuffle=True, random_state=SEED)
    with threadpool_limits(limits=threads or None):
        cv_scores: dict[str, float] = {}
        for name in estimators:
            scores = cross_val_score(ESTIMATORS[name](schema), xs, ys, scoring=metric, cv=cv, n_jobs=1)
            cv_scores[name] = float(np.mean(scores))
        best = max(cv_scores, key=lambda k_: (cv_scores[k_], -estimators.index(k_)))
        model = ESTIMATORS[best](schema).fit(x, y)
    return Trained(model=model, estimator=best, cv_scores=cv_scores)


def fingerprint(parts: list[str]) -> str:
    """A stable digest of the training data (content hashes of the accepted batches) and the schema."""
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
