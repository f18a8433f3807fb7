"""Request checks: every bad instance is named by index and field before anything reaches the model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.schema import Feature, Schema

#: checked columns in schema order: a list per feature, or for a numeric feature of more than SCAN_MAX values the
#: float64 array its checks built (NaN for a null), which the matrix, the relay to the agent and the capture buffer
#: then take as it is (a 1,000-row request converted each numeric column to floats three more times)
Columns = dict[str, Any]


def _bad(index: int, field: str, message: str) -> InvalidInput:
    return InvalidInput(f"instance {index}, field '{field}': {message}", instance=index, field=field)


def _check_value(f: Feature, value: Any, index: int) -> Any:
    if value is None:
        if not f.nullable:
            raise _bad(index, f.name, "is null but not nullable")
        return math.nan if f.type == "numeric" else None
    if f.type == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(index, f.name, f"expected a number, got {type(value).__name__} {value!r:.40}")
        v = float(value)
        if not math.isfinite(v):
            raise _bad(index, f.name, "must be finite")
        if f.min is not None and v < f.min:
            raise _bad(index, f.name, f"{value} is below the minimum {f.min:g}")
        if f.max is not None and v > f.max:
            raise _bad(index, f.name, f"{value} is above the maximum {f.max:g}")
        if f.integer and not v.is_integer():
            raise _bad(index, f.name, f"{value} is not a whole number")
        return v
    if not isinstance(value, str):
        raise _bad(index, f.name, f"expected a string, got {type(value).__name__}")
    if f.categories is not None and value not in f.categories:
        raise _bad(index, f.name, f"{value!r:.40} is not one of {list(f.categories)}")
    return value


def records_to_columns(schema: Schema, instances: Any, max_instances: int) -> Columns:
    """`{"instances": [{feature: value}]}` -> checked columns in schema order."""
    if not isinstance(instances, list):
        raise InvalidInput("'instances' must be a list of objects", field="instances")
    if not instances:
        raise InvalidInput("'instances' is empty", field="instances")
    if len(instances) > max_instances:
        raise PayloadTooLarge(f"{len(instances)} instances; at most {max_instances} per request", limit=max_instances)
    names = schema.feature_set
    width = len(names)
    if len(instances) > 1 and all(type(inst) is dict and len(inst) == width for inst in instances):
        # the common batch: plain objects of as many keys as features. If each has every feature (itemgetter
        # finds them), it has no other key: the rows, then transposed to columns, in C (less than half the time
        # of a comprehension per feature, measured on 1,000 rows). A miss takes the exact path below
        try:
            rows = list(map(schema.row_values, instances))
        except KeyError:
            pass
        else:
            columns = map(list, zip(*rows, strict=True))
            return checked_columns(schema, dict(zip(schema.feature_names, columns, strict=True)))
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise InvalidInput(f"instance {i} is not an object", instance=i)
        if len(inst) != width or inst.keys() != names:
            _check_keys(schema, inst, i, names)  # raises, unless only nullable features are missing
    if len(instances) == 1:  # most requests: no comprehension per feature
        only = instances[0]
        cols: Columns = {name: [only.get(name)] for name in schema.feature_names}
    else:  # a column at a time (one comprehension per feature: half the time of appending row by row)
        cols = {name: [inst.get(name) for inst in instances] for name in schema.feature_names}
    return checked_columns(schema, cols)


def checked_columns(schema: Schema, cols: Columns) -> Columns:
    """Every column checked, the reported error at the lowest instance index (then schema order), as a row scan
    would report it; missing numeric values as NaN."""
    if _small_and_fine(schema, cols):  # a few rows, every value valid as sent: nothing to report or replace
        return cols
    found, arrays = [], {}
    for order, f in enumerate(schema.features):
        idx, array = _first_bad(f, cols[f.name])
        if idx >= 0:
            found.append((idx, order))
        elif array is not None:
            arrays[f.name] = array
    if found:
        idx, order = min(found)
        f = schema.features[order]
        _check_value(f, cols[f.name][idx], idx)  # raises with the precise message
    for f in schema.features:
        if f.name in arrays:
            cols[f.name] = arrays[f.name]
        elif f.type == "numeric" and f.nullable and None in cols[f.name]:
            cols[f.name] = [math.nan if v is None else v for v in cols[f.name]]
    return cols


def joined(parts: list[Columns]) -> Columns:
    """Several requests' checked columns as one batch's: a column any of them holds as an array (numeric, then)
    joined by numpy, the others as lists."""
    if len(parts) == 1:
        return parts[0]
    out: Columns = {}
    for name in parts[0]:
        cols = [part[name] for part in parts]
        if any(isinstance(col, np.ndarray) for col in cols):
            out[name] = np.concatenate([np.asarray(col, dtype=np.float64) for col in cols])
        else:
            out[name] = [v for col in cols for v in col]
    return out


def as_list(col: Any) -> list[Any]:
    """A checked column's values as a list of Python values (an array's floats included)."""
    return col.tolist() if isinstance(col, np.ndarray) else col


def _check_keys(schema: Schema, inst: dict[str, Any], i: int, names: frozenset[str]) -> None:
    unknown = sorted(set(inst) - names)
    if unknown:
        raise _bad(i, unknown[0], f"unknown feature; expected {schema.feature_names}")
    missing = [n for n in schema.feature_names if n not in inst and not schema.by_name[n].nullable]
    if missing:
        raise _bad(i, missing[0], "missing feature")


_NUMBER: set[type] = {int, float}


def _small_and_fine(schema: Schema, cols: Columns) -> bool:
    """Every column of at most SCAN_MAX values, each plainly valid as sent: a number within its feature's bounds
    or one of its categories. A null, a subclass or anything doubtful says False, and the exact checks decide. One
    pass over the schema's plain bounds, no call per value (a 1-row request has one value per feature)."""
    for name, numeric, lowest, highest, whole, categories in schema.plain_bounds:
        col = cols[name]
        if len(col) > SCAN_MAX:
            return False
        if numeric:
            for v in col:
                kind = type(v)
                if kind is int:
                    v = float(v)  # compared as `_check_value` compares it
                elif kind is not float:
                    return False
                if not lowest <= v <= highest or (whole and not v.is_integer()):  # NaN and infinities fail here
                    return False
        else:
            for v in col:
                if type(v) is not str or (categories is not None and v not in categories):
                    return False
    return True


#: Up to this many values a plain scan is cheaper than building numpy arrays (measured: 1-row requests spent a
#: fifth of their time in the vectorised checks once predictions took microseconds)
SCAN_MAX = 16


def _first_bad(f: Feature, col: list[Any]) -> tuple[int, np.ndarray | None]:
    """Index of the first value that fails its checks, -1 if none: vectorised for the common case; and the float64
    array the vectorised numeric checks built (None for any other column)."""
    if len(col) <= SCAN_MAX:
        return _scan(f, col), None
    kinds = set(map(type, col))
    if f.type == "numeric" and kinds <= _NUMBER | {type(None)}:
        nulls = type(None) in kinds
        arr = np.asarray([math.nan if v is None else v for v in col] if nulls else col, dtype="float64")
        missing = np.fromiter((v is None for v in col), bool, len(col)) if nulls else np.zeros(len(col), bool)
        bad = ~np.isfinite(arr) & ~missing if f.nullable else ~np.isfinite(arr)
        if f.min is not None:
            bad |= arr < f.min
        if f.max is not None:
            bad |= arr > f.max
        if f.integer:
            bad |= (arr != np.round(arr)) & ~missing  # NaN != NaN: a permitted null is not a fraction
        hits = np.flatnonzero(bad)
        return (int(hits[0]), None) if hits.size else (-1, arr)
    if f.type == "categorical" and kinds == {str} and f.categories is not None and set(col) <= set(f.categories):
        return -1, None
    return _scan(f, col), None  # mixed types or nulls: the exact scan


def _scan(f: Feature, col: list[Any]) -> int:
    for i, v in enumerate(col):
        try:
            _check_value(f, v, i)
        except InvalidInput:
            return i
    return -1


_V2_TYPES = {"FP64", "FP32", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64", "BYTES", "BOOL"}


def v2_to_columns(schema: Schema, body: Any, max_instances: int) -> Columns:
    """Open Inference Protocol V2: one named input tensor (shape [N] or [N,1]) per feature."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InvalidInput("V2 request needs an 'inputs' list", field="inputs")
    tensors: dict[str, list[Any]] = {}
    for t in body["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidInput("each input needs a 'name'", field="inputs")
        name = t["name"]
        if name not in schema.by_name:
            raise InvalidInput(f"input '{name}': unknown feature; expected {schema.feature_names}", field=name)
        if t.get("datatype") not in _V2_TYPES:
            raise InvalidInput(f"input '{name}': datatype {t.get('datatype')!r} unsupported", field=name)
        data = t.get("data")
        if not isinstance(data, list):
            raise InvalidInput(f"input '{name}': 'data' must be a list", field=name)
        if data and isinstance(data[0], list):  # shape [N, 1]
            data = [x[0] if isinstance(x, list) and len(x) == 1 else x for x in data]
        shape = t.get("shape")
        if not isinstance(shape, list) or not shape or shape[0] != len(data):
            raise InvalidInput(f"input '{name}': shape {shape} does not match {len(data)} values", field=name)
        tensors[name] = data
    lengths = {len(v) for v in tensors.values()}
    if len(lengths) > 1:
        raise InvalidInput(f"inputs have different lengths {sorted(lengths)}", field="inputs")
    n = lengths.pop() if lengths else 0
    if not n:
        raise InvalidInput("'inputs' hold no instances", field="inputs")
    if n > max_instances:
        raise PayloadTooLarge(f"{n} instances; at most {max_instances} per request", limit=max_instances)
    missing = [f.name for f in schema.features if f.name not in tensors and not f.nullable]
    if missing:
        raise _bad(0, missing[0], "missing feature")
    # the tensors are the columns already: no row is built (a missing nullable feature is all nulls)
    cols: Columns = {f.name: tensors[f.name] if f.name in tensors else [None] * n for f in schema.features}
    return checked_columns(schema, cols)
