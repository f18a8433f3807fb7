"""Drift page: per-feature PSI of the chosen model's captured inputs over a window (last N days of `captured_at`)
against a version's training profile (its manifest's `feature_stats`), the figures the serving pods export
(flywheel/feedback/capture_drift.py). Read-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import clients, display, picker
from flywheel.errors import FlywheelError
from flywheel.feedback import capture_drift

WINDOWS = [1, 7, 30]  # days
WINDOW_KEY, VERSION_KEY = "drift-window", "drift-version"


@st.cache_data(ttl=10, show_spinner=False)
def _versions(bucket: str, default_model: str, name: str) -> tuple[list[int], int | None]:
    """Model `name`'s versions (newest first) and the one in production."""
    registry = clients.registry(clients.bucket_settings(bucket, default_model), name)
    alias = registry.alias()
    return sorted(registry.versions(), reverse=True), alias.version if alias else None


@st.cache_data(ttl=30, show_spinner=False)
def _drift(bucket: str, default_model: str, name: str, version: int, days: int) -> dict[str, Any]:
    """PSI rows of the captures of the last `days` days against `version`'s profile (reads the window's capture
    files: cached briefly; Refresh clears it)."""
    core = clients.bucket_settings(bucket, default_model)
    manifest = clients.registry(core, name).manifest(version)
    since = datetime.now(UTC) - timedelta(days=days)
    table = capture_drift.read_since(clients.s3(), bucket, name, since)
    return {
        "rows": capture_drift.feature_psi(manifest, table, version),
        "captured": 0 if table is None else table.num_rows,
        "since": f"{since:%Y-%m-%d %H:%M} UTC",
        "profiled": "feature_stats" in manifest,
    }


def clear() -> None:
    _versions.clear()
    _drift.clear()


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["feature", "psi", "level", "kind", "values", "binned"]
    return pd.DataFrame(rows, columns=columns)


def render() -> None:
    name = picker.current().name
    st.header(f"Drift · {name}")
    core = clients.bucket_or_none()
    if core is None:
        return
    try:
        versions, production = _versions(core.bucket, core.model_name, name)
    except (ClientError, BotoCoreError) as e:
        st.error(f"Cannot read the registry at s3://{core.bucket}/{core.models_prefix}{name}/: {e}")
        return
    if not versions:
        st.info(f"No versions of {name} yet: drift compares captured inputs with a version's training data.")
        return
    left, right = st.columns(2)
    days = int(left.selectbox("Window", WINDOWS, index=1, key=WINDOW_KEY,
                              format_func=lambda d: f"last {d} day" + ("s" if d > 1 else "")))  # fmt: skip
    version = int(right.selectbox(
        "Training profile of", versions, index=versions.index(production) if production in versions else 0,
        key=VERSION_KEY, format_func=lambda v: f"v{v}" + (" · production" if v == production else "")))  # fmt: skip
    if st.button("Refresh", icon=":material/refresh:", key="drift-refresh"):
        clear()
        st.rerun()
    try:
        found = _drift(core.bucket, core.model_name, name, version, days)
    except (ClientError, BotoCoreError, FlywheelError) as e:
        st.error(f"Cannot compute the drift of {name}: {e}")
        return
    st.metric("Captured rows used", found["captured"])
    st.caption(f"Captures of {name} since {found['since']} (every version that answered), read from "
               f"captures/{name}/.")  # fmt: skip
    if not found["profiled"]:
        st.warning(f"v{version}'s manifest has no feature_stats (a version trained before profiles were kept).")
        return
    if not found["rows"]:
        st.info(f"No captured inputs of {name} in the window: the API replicas capture what they answer "
                "(FLYWHEEL_CAPTURE_SAMPLE) and flush every FLYWHEEL_CAPTURE_FLUSH_SECONDS.")  # fmt: skip
        return
    display.show(table(found["rows"]), hide_index=True)
    st.caption(
        f"PSI (population stability index) of the window's inputs in the bins of v{version}'s training data, "
        f"computed as the serving pods compute `flywheel_feature_drift_psi`: below {capture_drift.SHIFT} stable, "
        f"above {capture_drift.SHIFT} a shift worth a look, above {capture_drift.SIGNIFICANT} a significant one. "
        "values: captured rows; binned: the values counted (numeric: missing ones are not). "
        f"{capture_drift.PREDICTION}: v{version}'s own predictions against its holdout predictions."
    )
    few = [r["feature"] for r in found["rows"] if r["values"] < capture_drift.MIN_VALUES]
    if few:
        st.caption(f"Fewer than {capture_drift.MIN_VALUES} values for {', '.join(few)}: the pods would not export "
                   "a PSI yet, and a PSI of few values is noisy.")  # fmt: skip
