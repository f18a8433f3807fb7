"""A notice on every page when the chosen model's served version changes: polls the API every few seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from app.ui import clients, picker
from app.ui.api_client import ApiError
from flywheel.release.version_status import share_phrase

POLL_SECONDS = 5
SEEN = "served_versions"  # {model: the version this browser session saw last}
CHANGE = "served_version_change"  # {"model", "from", "to", "at"} until dismissed


def _dismiss() -> None:
    st.session_state.pop(CHANGE, None)


@st.fragment(run_every=POLL_SECONDS)
def served_version_notice() -> None:
    """Status line of the API for the chosen model; a toast and a banner when its version differs from the
    last one this session saw of that model (switching models is not a change).

    Behind a load balancer two replicas may briefly serve different versions while one reloads; the
    banner then follows whichever answered last, and settles within one API poll.
    """
    s = clients.settings()
    name = picker.current().name
    try:
        served = clients.api(s.api_url).served_model(name)
    except ApiError as e:
        st.warning(f"Prediction API ({name}): {e.message}.", icon=":material/cloud_off:")
        return
    seen: dict[str, int] = st.session_state.setdefault(SEEN, {})
    previous = seen.get(name)
    seen[name] = served.version
    if previous is not None and previous != served.version:
        at = datetime.now(UTC).strftime("%H:%M:%S UTC")
        st.session_state[CHANGE] = {"model": name, "from": previous, "to": served.version, "at": at}
        st.toast(
            f"{served.name} v{served.version} is now serving (was v{previous})", icon=":material/sync:", duration="long"
        )
    change = st.session_state.get(CHANGE)
    if change and change["model"] == name and change["to"] == served.version:
        text, button = st.columns([8, 1], vertical_alignment="center")
        text.info(
            f"The served model changed at {change['at']}: {served.name} v{change['from']} → v{change['to']}. "
            f"Predictions now come from v{change['to']}.",
            icon=":material/sync:",
        )
        button.button("Dismiss", key="dismiss_version_change", on_click=_dismiss)
    else:
        path = {"fast": "fast path", "pipeline": "scikit-learn Pipeline"}.get(served.serving_path, "")
        beside = f" · **{share_phrase(served.rollout)}**" if served.rollout else ""  # the candidate, named apart
        st.caption(
            f"Serving **{served.name} v{served.version}**{beside} ({served.source}, loaded {served.loaded_at}"
            + (f"; predictions through the {path}" if path else "")
            + ").",
            help=served.fast_path or None,
        )
