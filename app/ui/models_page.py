"""Models page: the chosen model's versions, gate decisions and metrics from the registry; promote and roll back;
its rollout (app/ui/rollout_panel.py) and live quality (app/ui/quality_panel.py)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import auth, clients, picker, quality_panel, rollout_panel
from flywheel.errors import ConflictError, NotFound
from flywheel.registry.operator_actions import promote, rollback, summaries
from flywheel.settings import CoreSettings

FLASH = "models_flash"  # (kind, message) of the last action, shown once
_MARKS = {"passed": "✅", "failed": "❌"}
# operator_actions.signature_state, the same as `flywheel models`: valid/INVALID with a verifier, else signed/unsigned
_SIGNATURE_MARKS = {"valid": "✓", "signed": "✓", "INVALID": "✗", "unsigned": "✗"}


@st.cache_data(ttl=10, show_spinner=False)
def _load(bucket: str, default_model: str, name: str) -> dict[str, Any]:
    """Model `name`'s version summaries and alias document (cached briefly; actions clear the cache)."""
    registry = clients.registry(clients.bucket_settings(bucket, default_model), name)
    alias = registry.alias()
    return {"rows": summaries(registry, clients.verifier()), "alias": alias.doc if alias else None}


@st.cache_data(max_entries=64, show_spinner=False)
def _manifest(bucket: str, default_model: str, name: str, version: int) -> dict[str, Any]:
    """A version's manifest: immutable, so cached without expiry."""
    return clients.registry(clients.bucket_settings(bucket, default_model), name).manifest(version)


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
        st.session_state[FLASH] = ("success", message + " The API replicas follow within one poll.")
    _load.clear()
    rollout_panel.clear()  # the judge aborts a rollout whose baseline is no longer in production


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["production"] = frame["production"].map({True: "★", False: ""})
    frame["signature"] = frame["signature"].map(lambda s: f"{_SIGNATURE_MARKS.get(s, '')} {s}".strip())
    frame["reasons"] = frame["reasons"].map("; ".join)
    columns = ["production", "version", "status", "signature", "created_at", "estimator", "metric", "candidate",
               "previous_production", "baseline", "rows", "batches", "reasons"]  # fmt: skip
    return frame[columns].sort_values("version", ascending=False)


def _chart(rows: list[dict[str, Any]]) -> None:
    metric = rows[-1]["metric"]
    frame = pd.DataFrame([r for r in rows if r["metric"] == metric])
    chart = frame.set_index("version")[["candidate", "baseline", "previous_production"]].rename(
        columns={"previous_production": "previous production"}
    )
    st.subheader(f"{metric} on each version's holdout")
    st.line_chart(chart, x_label="version", y_label=metric)
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
        format_func=lambda v: f"v{v} · {by_version[v]['status']}" + (" · production" if v == production else ""),
    )
    row = by_version[version]
    manifest = _manifest(core.bucket, core.model_name, name, version)
    decision = "approved" if row["status"] == "promoted" else "rejected"
    st.markdown(f"**Gate: {decision}** ({row['metric']}, tolerance {manifest['gate'].get('tolerance')})")
    for reason in row["reasons"]:
        st.markdown(f"- {_MARKS.get(reason.split(':', 1)[0], '•')} {reason}")
    metrics = {k: v for k, v in manifest["metrics"].items() if v}
    st.dataframe(pd.DataFrame(metrics).rename_axis("metric"), width="content")
    st.caption(
        f"{row['estimator']} trained on {row['rows']} rows from {row['batches']} batch(es) at {row['created_at']}; "
        f"sha256 {manifest['sha256'][:12]}…; "
        + ("signed (manifest.sig; replicas verify it before serving)" if row["signature"] in ("signed", "valid") else
           f"signature **{row['signature']}**: replicas that verify signatures never serve it")
    )  # fmt: skip

    flash = st.session_state.pop(FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    if not auth.current_identity().is_operator:
        st.info("Promote, force and roll back are for operators (or `flywheel promote` / `flywheel rollback`).")
        return
    if row["status"] != "promoted":
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
    rows, alias = loaded["rows"], loaded["alias"]
    if not rows:
        st.info(f"No versions of {name} yet: upload a batch on the Data page and the trainer publishes the first one.")
        return
    if alias:
        st.metric("In production", f"v{alias['version']}")
        st.caption(f"Alias moved by {alias.get('updated_by')} at {alias.get('updated_at')}: {alias.get('reason')}")
    else:
        st.warning("No version is in production: the gate has approved none yet. Promote one below.")
    if st.button("Refresh", icon=":material/refresh:"):
        _load.clear()
        rollout_panel.clear()
        quality_panel.clear()
        picker.clear()
        st.rerun()
    st.dataframe(_table(rows), hide_index=True)
    rollout_panel.render(core, name, _load.clear)
    quality_panel.render(core, name, chosen.schema)
    _chart(rows)
    st.subheader("Gate decision and actions")
    _details(core, name, rows)
