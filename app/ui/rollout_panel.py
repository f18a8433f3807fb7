"""The models page's Rollout section: the model's candidate on live traffic, the fleet's figures per version, the
judge's verdict now and the candidate's history; operators promote the candidate or abort the rollout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import auth, clients, display
from flywheel.errors import ConflictError, NotFound
from flywheel.release import rollout_actions
from flywheel.release.rollout_view import snapshot
from flywheel.settings import CoreSettings

FLASH = "rollout_flash"  # (kind, message) of the last decision, shown once
REASON_KEY = "rollout-reason"
_VERDICTS = {"promote": st.success, "abort": st.error, "wait": st.info}


@st.cache_data(ttl=10, show_spinner=False)
def _load(bucket: str, default_model: str, name: str) -> dict[str, Any] | None:
    """rollout_view.snapshot of model `name` (as `flywheel rollout status`); cached briefly, decisions clear it."""
    return snapshot(clients.registry(clients.bucket_settings(bucket, default_model), name))


def clear() -> None:
    _load.clear()


def _decide(core: CoreSettings, name: str, what: str, candidate: int, refresh: Callable[[], None]) -> None:
    """Button callback: record the operator's decision on the running rollout of `candidate` (the same calls as
    `flywheel rollout promote|abort`). The operator role is checked again here: a button is not a permission."""
    who = auth.operator()
    if who is None:
        st.session_state[FLASH] = ("error", auth.REFUSED.format(what=f"{what} a rollout"))
        return
    reason = str(st.session_state.get(REASON_KEY) or "").strip() or f"{what} by {who.label} (UI)"
    act = rollout_actions.promote if what == "promote" else rollout_actions.abort
    registry = clients.registry(core, name)
    try:
        decided = act(registry, actor=who.label, reason=reason, expected_candidate=candidate)
        alias = registry.alias()
    except (ConflictError, NotFound) as e:
        st.session_state[FLASH] = ("error", e.message)
    except (ClientError, BotoCoreError) as e:
        st.session_state[FLASH] = ("error", f"S3 refused to record the decision: {e}")
    else:
        serving = f"v{alias.version}" if alias else "none"
        said = f"{name}: rollout of v{decided.candidate} {decided.status} by {who.label}; production: {serving}."
        st.session_state[FLASH] = ("success", said + clients.mirror_note(registry))
    _load.clear()
    refresh()


def _figures(snap: dict[str, Any]) -> pd.DataFrame:
    r = snap["rollout"]
    rows = []
    for role, version in (("candidate", r["candidate"]), ("production", r["baseline"])):
        f = snap[role] or {}
        rows.append({"version": f"{role} v{version}", "requests": f.get("requests"), "errors": f.get("errors"),
                     "error rate": f.get("error_rate"), "p99 ms": f.get("p99_ms"), "agreement": f.get("agreement"),
                     "mean relative difference": f.get("mean_relative_difference")})  # fmt: skip
    return pd.DataFrame(rows)


def render(core: CoreSettings, name: str, refresh: Callable[[], None]) -> None:
    """The Rollout section of model `name`; `refresh` clears the page's own cached reads after a decision."""
    st.subheader("Rollout")
    flash = st.session_state.pop(FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    try:
        snap = _load(core.bucket, core.model_name, name)
    except (ClientError, BotoCoreError) as e:
        st.error(f"Cannot read the rollout of {name}: {e}")
        return
    if snap is None:
        st.caption(f"No rollout of {name}: approved versions go straight to production unless a rollout is "
                   "started (`flywheel rollout start VERSION --mode shadow|canary`).")  # fmt: skip
        return
    r = snap["rollout"]
    st.markdown(f"**{r['mode'].capitalize()} rollout of v{r['candidate']} against v{r['baseline']}: {r['status']}** "
                f"(share {r['share']:g})")  # fmt: skip
    st.caption(f"Started by {r['started_by']} at {r['started_at']}.")
    if r["status"] != "running":
        st.caption(f"{r['status'].capitalize()} by {r['decided_by']} at {r['decided_at']}: {r['reason']}")
    display.show(_figures(snap), hide_index=True)
    st.caption(f"Statistics from {snap['pods']} serving process(es), merged. Agreement (classification) and mean "
               "relative difference (regression) are shadow mode's comparisons with production.")  # fmt: skip
    if snap["problem"]:
        st.warning(f"The statistics cannot be merged: {snap['problem']}")
    verdict = snap["verdict"]
    if verdict:
        _VERDICTS.get(verdict["action"], st.info)(f"The judge now: {verdict['action']}: {verdict['reason']}")
    limits = ", ".join(f"{k} {v:g}" for k, v in r["thresholds"].items())
    st.caption(f"Thresholds: {limits}.")
    with st.expander(f"History of v{r['candidate']}"):
        events = [{k: e.get(k, "") for k in ("when", "what", "who", "reason")} for e in snap["history"]]
        display.show(pd.DataFrame(events, columns=["when", "what", "who", "reason"]), hide_index=True)
    if r["status"] != "running":
        return
    if not auth.current_identity().is_operator:
        st.info("Promoting the candidate or aborting the rollout is for operators "
                "(or `flywheel rollout promote` / `flywheel rollout abort`).")  # fmt: skip
        return
    st.text_input("Reason (recorded with the decision)", key=REASON_KEY)
    left, right = st.columns(2)
    left.button(f"Promote candidate v{r['candidate']}", key="rollout-promote", type="primary", on_click=_decide,
                args=(core, name, "promote", r["candidate"], refresh))  # fmt: skip
    right.button("Abort rollout", key="rollout-abort", on_click=_decide,
                 args=(core, name, "abort", r["candidate"], refresh))  # fmt: skip
