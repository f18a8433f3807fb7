"""The models page's Live quality section: captured predictions joined with their delayed labels
(flywheel.feedback.live_quality.live_quality, as `flywheel quality`), per version beside the gate's holdout
score. Read-only."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import clients, display
from flywheel.errors import FlywheelError
from flywheel.feedback.live_quality import METRICS, live_quality
from flywheel.schema import Schema
from flywheel.settings import CoreSettings


@st.cache_data(ttl=30, show_spinner=False)
def _load(bucket: str, default_model: str, name: str, _schema: Schema) -> dict[str, Any]:
    """live_quality of model `name` (it reads every capture and label file: cached briefly; Refresh clears it)."""
    core = clients.bucket_settings(bucket, default_model)
    return live_quality(clients.s3(), bucket, name, _schema, models_prefix=core.models_prefix)


def clear() -> None:
    _load.clear()


def summary(q: dict[str, Any]) -> pd.DataFrame:
    """One row per version: captured, labelled (n), holdout score, each live figure and live minus holdout."""
    primary, rows = q["primary_metric"], []
    for v in q["versions"]:
        live, holdout = v["live"], v["holdout"]["score"]
        row: dict[str, Any] = {"version": v["version"], "captured": v["captured"], "labelled": live["n"],
                               f"holdout {primary}": holdout}  # fmt: skip
        row.update({f"live {n}": live[n] for n in list(METRICS[q["task"]])})
        same = holdout is not None and live.get(primary) is not None and v["holdout"]["metric"] == primary
        row["live - holdout"] = live[primary] - holdout if same else None
        rows.append(row)
    return pd.DataFrame(rows)


def per_day(q: dict[str, Any], version: dict[str, Any]) -> pd.DataFrame:
    """The version's primary live figure per UTC day, with its holdout score on every day as the reference (drawn
    as a rule across the chart, so a single day still shows both)."""
    primary = q["primary_metric"]
    frame = pd.DataFrame(
        {
            "day": [d["day"] for d in version["days"]],
            f"live {primary}": [d[primary] for d in version["days"]],
            f"holdout {primary}": [version["holdout"]["score"]] * len(version["days"]),
        }
    )
    return frame.set_index("day")


def _notes(q: dict[str, Any]) -> None:
    lab = q["labels"]
    shown = ", ".join(lab["unmatched_ids"]) + (", ..." if lab["unmatched"] > len(lab["unmatched_ids"]) else "")
    st.caption(f"Labels: {lab['ids']} id(s) from {lab['files']} file(s) under feedback/{q['model']}/, "
               f"{lab['matched']} matched a capture, {lab['relabelled']} relabelled by a newer file.")  # fmt: skip
    if lab["unmatched"]:
        st.caption(f"{lab['unmatched']} label(s) match no capture yet ({shown}): they may match once the "
                   "replicas flush the captures, or carry ids no client was given.")  # fmt: skip
    if lab.get("ambiguous"):  # docs/captures.md, "Ids and keys"
        more = ", ..." if lab["ambiguous"] > len(lab["ambiguous_ids"]) else ""
        st.warning(f"{lab['ambiguous']} label(s) joined nothing: their ids were captured under more than one API "
                   f"key ({', '.join(lab['ambiguous_ids'])}{more}).")  # fmt: skip
    for bad in q["skipped"]:
        st.warning(f"Skipped label file {bad.get('file', '?')}: {bad.get('error', '')}")


def render(core: CoreSettings, name: str, schema: Schema | None) -> None:
    """The Live quality section of model `name` (visible to every signed-in role)."""
    st.subheader("Live quality")
    if schema is None:
        st.caption(f"{name} is not registered in the bucket: its schema (and so its labels) are unknown here.")
        return
    try:
        q = _load(core.bucket, core.model_name, name, schema)
    except (ClientError, BotoCoreError, FlywheelError) as e:
        st.error(f"Cannot compute the live quality of {name}: {e}")
        return
    primary = q["primary_metric"]
    labelled = [v for v in q["versions"] if v["live"]["n"]]
    if not labelled:
        captured = sum(v["captured"] for v in q["versions"])
        st.info(f"No labelled predictions yet: {captured} captured prediction(s) of {name}. Upload their true "
                f"outcomes with `flywheel feedback FILE --model {name}` (columns id and "
                f"{schema.target.name}).")  # fmt: skip
        _notes(q)
        return
    display.show(summary(q), hide_index=True)
    st.caption(f"live: the figures on captured predictions that have a label ('labelled' is their n; R² needs 2); "
               f"holdout: the gate's {primary} at training time; live - holdout in {primary}.")  # fmt: skip
    for v in labelled:
        st.markdown(f"**v{v['version']}**: live {primary} per UTC day of the capture")
        display.lines(per_day(q, v), "day", primary, reference=f"holdout {primary}")
    _notes(q)
