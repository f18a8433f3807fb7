"""Reading CDK context into settings dataclasses: camelCase keys, parsed values, checks that name the key."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from constructs import Node


class SettingsError(ValueError):
    """A context value is missing its form or range; the message names the key."""


def read_context(cls: Any, node: Node) -> dict[str, Any]:
    """The context values set for the fields of dataclass `cls` (snake_case keys; unset ones left out)."""
    raw = {f.name: node.try_get_context(context_key(f.name)) for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if v is not None}


def parse_values(cls: Any, values: dict[str, Any], parser: Callable[[str], Callable[[Any], Any]]) -> dict[str, Any]:
    """`values` parsed field by field (`parser(name)` gives the parser); unknown keys and bad values raise
    SettingsError naming the context key."""
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        try:
            parsed[name] = parser(name)(value)
        except (TypeError, ValueError) as e:
            raise SettingsError(f"context {context_key(name)!r}: {e}") from e
    return parsed


def check_all(settings: Any, checks: list[tuple[str, bool, str]]) -> None:
    """Raise SettingsError naming the first (field, ok, expected) check that failed."""
    for name, ok, expected in checks:
        if not ok:
            raise SettingsError(f"context {context_key(name)!r} = {getattr(settings, name)!r}: expected {expected}")


def context_key(field_name: str) -> str:
    """`node_min_size` -> `nodeMinSize`."""
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)
