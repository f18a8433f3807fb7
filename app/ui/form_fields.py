"""The prediction form as data: one field per schema feature, with ranges, steps and defaults (no Streamlit).

Defaults come from the served model's manifest (`feature_stats`, the training data's distribution):
the median for numeric features, the most frequent category for categorical ones. Without statistics
they fall back to the middle of the schema's range (numeric) or the first category.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flywheel.schema import Feature, Schema

MISSING = "(missing)"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class NumberField:
    """A numeric feature: ints with step 1 for integer features, floats otherwise; None = missing."""

    name: str
    label: str
    help: str
    integer: bool
    min: int | float | None
    max: int | float | None
    step: int | float
    default: int | float | None
    nullable: bool

    @property
    def format(self) -> str:
        """printf format showing as many decimals as the step needs (at least two for floats)."""
        if self.integer:
            return "%d"
        return f"%.{max(2, -math.floor(math.log10(self.step)))}f"


@dataclass(frozen=True)
class ChoiceField:
    """A categorical feature: its categories, plus MISSING (last) when the feature is nullable."""

    name: str
    label: str
    help: str
    options: tuple[str, ...]
    index: int
    nullable: bool


FormField = NumberField | ChoiceField


def build_fields(schema: Schema, feature_stats: dict[str, Any] | None = None) -> list[FormField]:
    """One field per feature, in schema order."""
    stats = feature_stats or {}
    return [
        _number(f, stats.get(f.name)) if f.type == "numeric" else _choice(f, stats.get(f.name)) for f in schema.features
    ]


def to_instance(fields: list[FormField], values: dict[str, Any]) -> dict[str, Any]:
    """Widget values -> one API instance: MISSING and empty numbers become None, integers stay ints."""
    instance: dict[str, Any] = {}
    for f in fields:
        value = values.get(f.name)
        if isinstance(f, ChoiceField):
            instance[f.name] = None if value in (None, MISSING) else str(value)
        elif value is None:
            instance[f.name] = None
        else:
            instance[f.name] = int(value) if f.integer else float(value)
    return instance


def median_from_profile(profile: dict[str, Any] | None) -> float | None:
    """The training median, recovered from a numeric profile (flywheel.training.drift.numeric_profile).

    The profile keeps the deciles as bin edges (duplicates removed) and the share of values in each bin
    (bin 0 is below the first edge). The median is one of those edges: the largest edge with at most
    half of the values below it.
    """
    if not profile or profile.get("kind") != "numeric":
        return None
    edges = [float(e) for e in profile.get("edges") or []]
    proportions = [float(p) for p in profile.get("proportions") or []]
    if not edges or len(proportions) != len(edges) + 1:
        mean = profile.get("mean")
        return float(mean) if isinstance(mean, int | float) and math.isfinite(mean) else None
    below, median = 0.0, edges[0]
    for i, edge in enumerate(edges):
        below += proportions[i]  # share of values below this edge
        if below > 0.5 + _TOLERANCE:
            break
        median = edge
    return median


def mode_from_profile(profile: dict[str, Any] | None, categories: tuple[str, ...]) -> str | None:
    """The most frequent known category of a categorical profile (ties: the first in schema order)."""
    if not profile or profile.get("kind") != "categorical":
        return None
    shares = dict(zip(profile.get("categories") or [], profile.get("proportions") or [], strict=False))
    known = [(float(shares[c]), -i, c) for i, c in enumerate(categories) if c in shares]
    if not known or max(known)[0] <= 0:
        return None
    return max(known)[2]


def _label(f: Feature) -> str:
    return f"{f.name} ({f.unit})" if f.unit else f.name


def _help(f: Feature) -> str:
    parts = [f.description] if f.description else []
    if f.type == "numeric":
        lo = "-∞" if f.min is None else f"{f.min:g}"
        hi = "∞" if f.max is None else f"{f.max:g}"
        parts.append(f"{'whole number' if f.integer else 'number'} in [{lo}, {hi}]")
    if f.nullable:
        parts.append("may be left empty (missing)" if f.type == "numeric" else f"choose {MISSING} when unknown")
    return "; ".join(parts)


def _number(f: Feature, profile: dict[str, Any] | None) -> NumberField:
    lo, hi = f.min, f.max
    if f.integer:
        lo = None if lo is None else math.ceil(lo)
        hi = None if hi is None else math.floor(hi)
    typical = median_from_profile(profile)
    if typical is None:
        typical = _midpoint(lo, hi)
    if lo is not None:
        typical = max(typical, lo)
    if hi is not None:
        typical = min(typical, hi)
    if f.integer:
        return NumberField(
            f.name, _label(f), _help(f), True,
            None if lo is None else int(lo), None if hi is None else int(hi), 1, round(typical), f.nullable,
        )  # fmt: skip
    return NumberField(
        f.name, _label(f), _help(f), False,
        None if lo is None else float(lo), None if hi is None else float(hi),
        _float_step(profile, lo, hi), float(typical), f.nullable,
    )  # fmt: skip


def _choice(f: Feature, profile: dict[str, Any] | None) -> ChoiceField:
    categories = tuple(f.categories or ())
    options = (*categories, MISSING) if f.nullable else categories
    default = mode_from_profile(profile, categories)
    return ChoiceField(f.name, _label(f), _help(f), options, options.index(default) if default else 0, f.nullable)


def _midpoint(lo: float | None, hi: float | None) -> float:
    if lo is not None and hi is not None:
        return (lo + hi) / 2
    if lo is not None:
        return lo
    if hi is not None:
        return min(hi, 0.0)
    return 0.0


def _float_step(profile: dict[str, Any] | None, lo: float | None, hi: float | None) -> float:
    """A round step about a tenth of the spread: the training std when known, else a tenth of the range."""
    spread = float((profile or {}).get("std") or 0.0)
    if not (spread > 0 and math.isfinite(spread)):
        spread = (hi - lo) / 10 if lo is not None and hi is not None and hi > lo else 10.0
    return float(10 ** (math.floor(math.log10(spread)) - 1))
