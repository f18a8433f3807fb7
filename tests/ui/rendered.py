"""What a page draws, as a user would read it: the text of every table cell and the charts' specs and data."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

#: what Streamlit (or pandas' str()) prints for a missing value
MISSING_WORDS = {"None", "nan", "NaN", "<NA>", "NaT"}


def missing_cells(at: AppTest) -> list[tuple[int, str, str]]:
    """(table index, column, text) of every cell of every table on the page that reads as a missing value. Streamlit
    draws a null cell as `None` whatever the page asks of a pandas Styler, so the data itself is checked."""
    found = []
    for i, table in enumerate(at.dataframe):
        frame: pd.DataFrame = table.value
        for column in frame.columns:
            for cell in frame[column]:
                if (not isinstance(cell, (list, tuple, dict)) and pd.isna(cell)) or str(cell) in MISSING_WORDS:
                    found.append((i, str(column), str(cell)))
    return found


def charts(at: AppTest) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(Vega-Lite spec, data) of every chart on the page, in order."""
    out = []
    for chart in at.get("vega_lite_chart"):
        proto = chart.proto
        blob = proto.data.data if proto.HasField("data") else proto.datasets[0].data.data
        out.append((json.loads(proto.spec), pa.ipc.open_stream(blob).read_all().to_pandas()))
    return out


def marks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The marks of a spec and its layers, each as a dict (`"line"` -> `{"type": "line"}`)."""
    found = [spec["mark"]] if "mark" in spec else []
    for layer in spec.get("layer", []):
        found += marks(layer)
    return [m if isinstance(m, dict) else {"type": m} for m in found]
