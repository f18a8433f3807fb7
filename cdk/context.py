"""Reading CDK context into settings dataclasses: camelCase keys, parsed values (a JSON value from cdk.json or a
string from `-c key=value`), checks that name the key."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from constructs import Node

T = TypeVar("T")


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


def matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", value.strip()):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def parse_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value).strip()


def parse_str_tuple(value: Any) -> tuple[str, ...]:
    """A JSON list (cdk.json) or a comma-separated string (`-c key=a,b`)."""
    items: Any = value
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(i.strip() for i in items if i.strip())


def optional(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    def parse_optional(value: Any) -> T | None:
        return None if value is None or value == "" else parse(value)

    return parse_optional
