"""Models page: the chosen model's versions, gate decisions and metrics from the registry; promote and roll back;
its rollout (app/ui/rollout_panel.py) and live quality (app/ui/quality_panel.py); each version's run in MLflow when
the mirror is on (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import auth, clients, display, picker, quality_panel, rollout_panel
from flywheel.errors import ConflictError, NotFound
from flywheel.registry.operator_actions import promote, rollback
from flywheel.release.version_status import STATUSES, listing, share_phrase
from flywheel.settings import CoreSettings
from flywheel.tracking.mirror import run_links
from flywheel.tracking.mlflow_client import tracking_uri

FLASH = "models_flash"  # (kind, message) of the last action, shown once
# material icons, not emoji: they render without an emoji font
_MARKS = {"passed": ":material/check:", "failed": ":material/close:"}
_COLUMNS = {  # the versions table, sized to fit beside the sidebar (about 900 px); the gate's reasons and the
    # metric's name (one per model: its task's) are in the version's details and the caption instead
    "version": st.column_config.NumberColumn("version", width=60),
    "status": st.column_config.TextColumn(
        "status", width=110, help="; ".join(f"{k}: {v}" for k, v in STATUSES.items())
    ),
    "gate": st.column_config.TextColumn("gate", width=75, help="the gate's decision at training time"),
    "signature": st.column_config.TextColumn("signature", width=80),
    "created": st.column_config.TextColumn("created (UTC)", width=125),
    "estimator": st.column_config.TextColumn("estimator", width=80),
    "metric": None,  # hidden
    "candidate": st.column_config.NumberColumn("candidate", width=80, help="the version on its holdout"),
    "previous_production": st.column_config.NumberColumn(
        "prev. prod.", width=80, help="the model in production then, on the same holdout"
    ),
    "baseline": st.column_config.NumberColumn("naive", width=70, help="a naive baseline, on the same holdout"),
    "rows": st.column_config.NumberColumn("rows", width=65),
    "batches": st.column_config.NumberColumn("batches", width=60),
}


@st.cache_data(ttl=10, show_spinner=False)
def _load(bucket: str, default_model: str, name: str) -> dict[str, Any]:
    """Model `name`'s versions with their status, its alias document and its rollout (cached briefly; actions
    clear the cache)."""
    registry = clients.registry(clients.bucket_settings(bucket, default_model), name)
    found = listing(registry, clients.verifier())
    return {"rows": found.rows, "alias": found.alias.doc if found.alias else None, "serving": found.serving,
            "rollout": found.rollout.to_dict() if found.rollout else None}  # fmt: skip


@st.cache_data(max_entries=64, show_spinner=False)
def _manifest(bucket: str, default_model: str, name: str, version: int) -> dict[str, Any]:
    """A version's manifest: immutable, so cached without expiry."""
    return clients.registry(clients.bucket_settings(bucket, default_model), name).manifest(version)


@st.cache_data(ttl=30, show_spinner=False)
def _run_links(uri: str, name: str) -> dict[int, str]:
    """{version: its retrain's run in the MLflow UI} of model `name` at `uri` ({} when MLflow does not answer; one
    search, bounded by the mirror's timeout; cached briefly: a retrain's run appears within 30 s, or on Refresh)."""
    return run_links(name)


def _run_link(name: str, version: int) -> None:
    """Where version `version`'s run is in MLflow; nothing when the mirror is off or MLflow does not answer."""
    uri = tracking_uri()
    links = _run_links(uri, name) if uri else {}
    if version in links:
        st.markdown(f":material/open_in_new: [v{version}'s run in MLflow]({links[version]}): its parameters, "
                    "metrics and model; tick two runs of the experiment there and *Compare*.")  # fmt: skip
    elif links:
        st.caption(f"v{version} is not in MLflow yet: `flywheel mlflow sync --model {name}` mirrors it.")


def _force_key(name: str, version: int) -> str:
    return f"force-{name}-{version}"


def _act(core: CoreSettings, name: str, what: str, version: int | None = None) -> None:
    """Button callback: move model `name`'s alias with the same compare-and-swap as the CLI, recording who did
    it, and report the outcome. The operator role is checked again here: a button is not a permission."""
    who = auth.operator()
    if who is None:
        st.session_state[FLASH] = ("error", auth.REFUSED.format(what=f"{what} a version"))
        return
    registry = clients.registry(core, name)
    try:
        if what == "promote" and version is not None:
            force = bool(st.session_state.get(_force_key(name, version), False))
            reason = f"forced by {who.label} (the gate rejected v{version})" if force else ""
            alias = promote(registry, version, actor=who.label, force=force, reason=reason)
            message = f"{name}: production → v{alias.version}."
        else:
            alias = rollback(registry, actor=who.label)
            message = f"Rolled back {name}: production → v{alias.version} (was v{alias.doc['previous']})."
    except (ConflictError, NotFound) as e:
        st.session_state[FLASH] = ("error", e.message)
    except (ClientError, BotoCoreError) as e:
        st.session_state[FLASH] = ("error", f"S3 refused to move the alias: {e}")
    else:
        st.session_state[FLASH] = ("success", message + " The API replicas follow within one poll."
                                   + clients.mirror_note(registry))  # fmt: skip
    _load.clear()
    rollout_panel.clear()  # the judge aborts a rollout whose baseline is no longer in production


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The versions, newest first, in the columns of _COLUMNS (signature: operator_actions.signature_state)."""
    frame = pd.DataFrame(rows)
    frame["created"] = frame["created_at"].map(display.short_time)
    return frame[list(_COLUMNS)].sort_values("version", ascending=False)


def _chart(rows: list[dict[str, Any]]) -> None:
    metric = rows[-1]["metric"]
    frame = pd.DataFrame([r for r in rows if r["metric"] == metric])
    chart = frame.set_index("version")[["candidate", "baseline", "previous_production"]].rename(
        columns={"previous_production": "previous production"}
    )
    st.subheader(f"{metric} on each version's holdout")
    display.lines(chart, "version", metric)
    st.caption(
        "candidate: the version itself; baseline: a naive model; previous production: the model that served "
        "when the version was trained, scored on the same holdout."
    )


def _details(core: CoreSettings, name: str, rows: list[dict[str, Any]]) -> None:
    by_version = {r["version"]: r for r in rows}
    production = next((r["version"] for r in rows if r["production"]), None)
    versions = sorted(by_version, reverse=True)
    default = versions.index(production) if production in versions else 0
    version = st.selectbox(
        "Version",
        versions,
        index=default,
        format_func=lambda v: f"v{v} · {by_version[v]['status']}",
    )
    row = by_version[version]
    manifest = _manifest(core.bucket, core.model_name, name, version)
    st.markdown(f"**Gate: {row['gate']}** ({row['metric']}, tolerance {manifest['gate'].get('tolerance')}); "
                f"now **{row['status']}**: {STATUSES.get(row['status'], '')}")  # fmt: skip
    for reason in row["reasons"]:
        st.markdown(f"- {_MARKS.get(reason.split(':', 1)[0], '•')} {reason}")
    metrics = {k: v for k, v in manifest["metrics"].items() if v}
    display.show(pd.DataFrame(metrics).rename_axis("metric"), width="content")
    st.caption(
        f"{row['estimator']} trained on {row['rows']} rows from {row['batches']} batch(es) at {row['created_at']}; "
        f"sha256 {manifest['sha256'][:12]}…; "
        + ("signed (manifest.sig; replicas verify it before serving)" if row["signature"] in ("signed", "valid") else
           f"signature **{row['signature']}**: replicas that verify signatures never serve it")
    )  # fmt: skip
    _run_link(name, version)

    flash = st.session_state.pop(FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    if not auth.current_identity().is_operator:
        st.info("Promote, force and roll back are for operators (or `flywheel promote` / `flywheel rollback`).")
        return
    if row["gate"] != "approved":
        st.checkbox(
            "Force: serve this version although the gate rejected it",
            key=_force_key(name, version),
        )
    left, right = st.columns(2)
    left.button(
        f"Promote v{version} to production",
        key="promote",
        type="primary",
        disabled=version == production,
        on_click=_act,
        args=(core, name, "promote", version),
    )
    right.button(
        "Roll back to the previous approved version",
        key="rollback",
        disabled=production is None,
        on_click=_act,
        args=(core, name, "rollback"),
    )


def render() -> None:
    chosen = picker.current()
    name = chosen.name
    st.header(f"Models · {name}")
    core = clients.bucket_or_none()
    if core is None:
        return
    try:
        loaded = _load(core.bucket, core.model_name, name)
    except (ClientError, BotoCoreError) as e:
        st.error(f"Cannot read the registry at s3://{core.bucket}/{core.models_prefix}{name}/: {e}")
        return
    rows, alias, rollout = loaded["rows"], loaded["alias"], loaded["rollout"]
    if not rows:
        st.info(f"No versions of {name} yet: upload a batch on the Data page and the trainer publishes the first one.")
        return
    st.markdown(f"**{name}: {loaded['serving']}**")
    if alias:
        left, right = st.columns(2)
        left.metric("In production", f"v{alias['version']}")
        if rollout and rollout["status"] == "running":  # the candidate beside it, never taken for production
            right.metric(f"{rollout['mode'].capitalize()} candidate", f"v{rollout['candidate']}",
                         help=share_phrase(rollout))  # fmt: skip
        st.caption(f"Alias moved by {alias.get('updated_by')} at {alias.get('updated_at')}: {alias.get('reason')}")
    else:
        st.warning("No version is in production: the gate has approved none yet. Promote one below.")
    if st.button("Refresh", icon=":material/refresh:"):
        _load.clear()
        _run_links.clear()
        rollout_panel.clear()
        quality_panel.clear()
        picker.clear()
        st.rerun()
    display.show(_table(rows), hide_index=True, column_config=_COLUMNS)
    st.caption(f"status: where each version stands now (hover the column's name); gate: its decision at training "
               f"time. Scores: {rows[-1]['metric']} on each version's holdout. The gate's reasons are under *Gate "
               "decision and actions*.")  # fmt: skip
    rollout_panel.render(core, name, _load.clear)
    quality_panel.render(core, name, chosen.schema)
    _chart(rows)
    st.subheader("Gate decision and actions")
    _details(core, name, rows)
