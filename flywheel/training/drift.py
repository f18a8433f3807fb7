"""Distribution summaries for drift: training-time statistics and the PSI that compares against them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

BINS = 10
EPS = 1e-4


def numeric_profile(values: np.ndarray | pd.Series, bins: int = BINS) -> dict[str, Any]:
    """Quantile bin edges and the share of values in each bin (plus the share missing)."""
    arr = np.asarray(values, dtype="float64")
    present = arr[~np.isnan(arr)]
    if present.size == 0:
        return {"kind": "numeric", "edges": [], "proportions": [], "missing": 1.0}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "proportions": (counts / present.size).tolist(),
        "missing": float(1 - present.size / arr.size),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
    }


def categorical_profile(values: pd.Series | np.ndarray, categories: list[str]) -> dict[str, Any]:
    """Share of each category (unknown and missing values go to the extra last slot)."""
    import pandas as pd  # here, not at import: the judge (and so every `flywheel` command) imports this module

    s = pd.Series(values, dtype=object)
    counts = [int((s == c).sum()) for c in categories]
    other = len(s) - sum(counts)
    total = max(len(s), 1)
    return {
        "kind": "categorical",
        "categories": categories,
        "proportions": [c / total for c in [*counts, other]],
    }


def profile_frame(frame: pd.DataFrame, numeric: list[str], categorical: dict[str, list[str]]) -> dict[str, Any]:
    out = {name: numeric_profile(frame[name]) for name in numeric}
    out.update({name: categorical_profile(frame[name], cats) for name, cats in categorical.items()})
    return out


def bin_counts(profile: dict[str, Any], values: list[Any] | np.ndarray) -> np.ndarray:
    """How many of `values` fall in each bin of a stored profile (numeric: missing values are not counted;
    categorical: unknown and missing values count in the extra last bin)."""
    if profile["kind"] == "numeric":
        arr = np.asarray(values, dtype="float64")
        arr = arr[~np.isnan(arr)]
        edges = np.asarray(profile["edges"], dtype="float64")
        return np.bincount(np.searchsorted(edges, arr, side="right"), minlength=edges.size + 1)
    cats = profile["categories"]
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros(len(cats) + 1, dtype="int64")
    for v in values:
        counts[index.get(v, len(cats))] += 1
    return counts


def histogram(profile: dict[str, Any], values: list[Any] | np.ndarray) -> np.ndarray:
    """Proportions of `values` in the bins of a stored profile."""
    counts = bin_counts(profile, values)
    return counts / max(int(counts.sum()), 1)


def psi(expected: list[float] | np.ndarray, actual: np.ndarray) -> float:
    """Population stability index; > 0.1 is a shift worth a look, > 0.25 a significant one."""
    e = np.clip(np.asarray(expected, dtype="float64"), EPS, None)
    a = np.clip(np.asarray(actual, dtype="float64"), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))
