"""How the pages draw tables and line charts, so that every page shows a missing value and a single point alike.

- Streamlit prints a missing cell as `None` (even under a pandas Styler's `na_rep`); here it reads `—`.
- st.line_chart draws lines only, so a series of one point (one day, one version) is an empty frame; these
  charts mark every point, and a reference value (the holdout score) is a rule across the whole chart.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

MISSING = "—"
PRECISION = 4  # decimals of the figures in a styled table, as `flywheel models` prints them


def show(frame: pd.DataFrame, column_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """st.dataframe with every missing value shown as MISSING (kwargs: hide_index, width, ...). Streamlit draws any
    null cell as `None`, whatever a Styler says, so a column with a missing value becomes text (filled); a column
    of numbers keeps its label, width and help, and stays right-aligned."""
    out, texts = filled(frame)
    config = dict(column_config or {})
    for column in texts:
        if column in config and config[column] is None:  # hidden
            continue
        base = config.get(column) or {}
        numeric = pd.api.types.is_numeric_dtype(frame[column]) or base.get("type_config", {}).get("type") == "number"
        if base or numeric:
            config[column] = st.column_config.TextColumn(
                base.get("label"),
                width=base.get("width"),
                help=base.get("help"),
                alignment="right" if numeric else None,
            )
    st.dataframe(out, column_config=config or None, **kwargs)


def filled(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Any]]:
    """(`frame` without a null cell, the columns that had one): each such column becomes text, with MISSING in its
    place and its numbers to PRECISION decimals (whole numbers without)."""
    out = frame.copy()
    texts = list(out.columns[out.isna().any().to_numpy()])
    for column in texts:
        out[column] = out[column].map(_text)
    return out, texts


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return MISSING
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.{PRECISION}f}"
    return str(value)


def short_time(iso: str | None) -> str:
    """`2024-05-01T09:30:12+00:00` -> `2024-05-01 09:30` (stored times are UTC, whole seconds)."""
    return str(iso or "")[:16].replace("T", " ")


def line_spec(x: str, y_label: str, *, x_type: str = "ordinal", reference: str | None = None) -> dict[str, Any]:
    """A Vega-Lite spec over long data (columns `x`, `series`, `value`): one line per series with every point
    marked, so one point still shows; with `reference` (a series name) that series is a dashed rule across the
    chart instead of a line."""
    color = {"field": "series", "type": "nominal", "title": None}
    name = json.dumps(reference)  # a JavaScript string literal
    points = {"filter": f"datum.series !== {name}"} if reference else None
    line: dict[str, Any] = {
        "mark": {"type": "line", "point": {"filled": True, "size": 90}, "tooltip": True},
        "encoding": {
            "x": {"field": x, "type": x_type, "title": x},
            "y": {"field": "value", "type": "quantitative", "title": y_label, "scale": {"zero": False}},
            "color": color,
        },
    }
    if points is None:
        return {"layer": [line]}
    rule = {
        "transform": [{"filter": f"datum.series === {name}"}],
        "mark": {"type": "rule", "strokeDash": [6, 4], "tooltip": True},
        "encoding": {"y": {"field": "value", "type": "quantitative", "aggregate": "mean"}, "color": color},
    }
    return {"layer": [{**line, "transform": [points]}, rule]}


def long_form(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """A wide frame indexed by `x` (one column per series) -> columns `x`, `series`, `value`; missing values dropped."""
    return frame.reset_index().melt(id_vars=x, var_name="series", value_name="value").dropna(subset=["value"])


def lines(frame: pd.DataFrame, x: str, y_label: str, *, x_type: str = "ordinal", reference: str | None = None) -> None:
    """Draw a wide frame indexed by `x` as marked lines (line_spec)."""
    st.vega_lite_chart(long_form(frame, x), line_spec(x, y_label, x_type=x_type, reference=reference), width="stretch")
