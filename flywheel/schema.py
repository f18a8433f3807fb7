"""Dataset schema: target, task and typed features with their allowed values (docs/schema.md)."""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flywheel.errors import SchemaError

Task = Literal["regression", "classification"]
BUILTIN_SCHEMAS = ("savings", "churn")


class Feature(BaseModel):
    """One input column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"]
    description: str = ""
    unit: str = ""
    min: float | None = None
    max: float | None = None
    integer: bool = False
    categories: tuple[str, ...] | None = None
    nullable: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs 'categories'")
            if self.min is not None or self.max is not None or self.integer:
                raise ValueError(f"categorical feature {self.name!r} takes no min/max/integer")
        elif self.categories is not None:
            raise ValueError(f"numeric feature {self.name!r} takes no 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min > max")
        return self


class Target(BaseModel):
    """The column to predict: numeric (regression) or one of `classes` (classification)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    unit: str = ""
    min: float | None = None
    max: float | None = None
    classes: tuple[str, ...] | None = None


class Schema(BaseModel):
    """A dataset contract: what a batch must contain and what the model predicts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    task: Task
    target: Target
    features: tuple[Feature, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names: {dupes}")
        if self.target.name in names:
            raise ValueError(f"target {self.target.name!r} is also a feature")
        if self.task == "classification" and not (self.target.classes and len(self.target.classes) >= 2):
            raise ValueError("a classification target needs at least two 'classes'")
        if self.task == "regression" and self.target.classes:
            raise ValueError("a regression target takes no 'classes'")
        return self

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def columns(self) -> list[str]:
        return [*self.feature_names, self.target.name]

    @cached_property
    def feature_set(self) -> frozenset[str]:
        return frozenset(self.feature_names)

    @cached_property
    def row_values(self) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        """An instance's values in feature order, a tuple; KeyError when one is missing. For the request path
        (flywheel/serving/inputs.py)."""
        if len(self.feature_names) == 1:  # itemgetter of one name gives the value itself
            name = self.feature_names[0]
            return lambda instance: (instance[name],)
        return operator.itemgetter(*self.feature_names)

    @cached_property
    def by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @cached_property
    def plain_bounds(self) -> tuple[tuple[str, bool, float, float, bool, frozenset[str] | None], ...]:
        """Per feature, in order: its name, numeric or not, the lowest and highest finite value it takes, whole
        numbers only, its categories. For the request path's quick check (flywheel/serving/inputs.py)."""
        top = sys.float_info.max
        return tuple((f.name, f.type == "numeric", -top if f.min is None else max(f.min, -top),
                      top if f.max is None else min(f.max, top), f.integer,
                      None if f.categories is None else frozenset(f.categories)) for f in self.features)  # fmt: skip

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]


def load_schema(ref: str) -> Schema:
    """Load a built-in schema by name (`savings`, `churn`) or a schema JSON file by path."""
    if ref in BUILTIN_SCHEMAS:
        text = resources.files("flywheel.schemas").joinpath(f"{ref}.json").read_text()
        origin = f"built-in schema {ref!r}"
    else:
        path = Path(ref)
        if not path.is_file():
            raise SchemaError(
                f"schema {ref!r} is neither a built-in ({', '.join(BUILTIN_SCHEMAS)}) nor a file", schema=ref
            )
        text, origin = path.read_text(), str(path)
    try:
        return Schema.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as e:
        raise SchemaError(f"{origin} is invalid: {e}", schema=ref) from e
