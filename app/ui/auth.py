"""Who is using the UI: sign-in for the three modes of FLYWHEEL_UI_AUTH, the sidebar's "signed in as", and the
operator check every action re-runs in its callback (a hidden button is not a permission).

- oidc: Streamlit's native sign-in (st.login / st.user / st.logout; app/ui/launch.py writes its [auth]
  secrets); the role comes from the groups claim (flywheel/access/ui_identity.py).
- local-token: `?identity=<token>` in the URL, once: verified with the public key, kept in the session, then
  removed from the address bar. `flywheel up` prints an operator and a viewer URL.
- viewer-only (the default): everybody is a viewer; operators use the CLI.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from flywheel.access.ui_identity import (
    ANONYMOUS_VIEWER,
    Identity,
    IdentityError,
    IdentitySettings,
    identity_from_claims,
    verify_token,
)

SESSION_KEY = "flywheel_identity"
QUERY_PARAM = "identity"


@st.cache_resource(show_spinner=False)
def settings() -> IdentitySettings:
    """IdentitySettings from the environment, read once per process."""
    return IdentitySettings()


@st.cache_resource(show_spinner=False)
def _public_key(path: str) -> bytes:
    return Path(path).read_bytes()


def _stop(message: str) -> None:
    st.error(message)
    st.stop()


def _settings_or_stop() -> IdentitySettings:
    try:
        return settings()
    except ValidationError as e:
        _stop(f"Invalid sign-in settings (FLYWHEEL_UI_* variables, docs/settings.md):\n\n{e}")
        raise  # unreachable: st.stop() raises


def _local_token(s: IdentitySettings) -> Identity:
    token = st.query_params.get(QUERY_PARAM)
    if token:
        del st.query_params[QUERY_PARAM]  # out of the address bar (and the browser's history of this page)
        st.session_state.pop(SESSION_KEY, None)
        try:
            st.session_state[SESSION_KEY] = verify_token(token, _public_key(str(s.identity_public_key_file)))
        except IdentityError as e:
            _stop(f"Sign-in refused: {e.message}.")
        except OSError as e:
            _stop(f"FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE cannot be read: {e.strerror}")
    who = st.session_state.get(SESSION_KEY)
    if isinstance(who, Identity) and who.expired():
        st.session_state.pop(SESSION_KEY, None)
        _stop("Your sign-in token has expired: open a new sign-in URL (`flywheel identity token`).")
    if not isinstance(who, Identity):
        st.title("Flywheel")
        _stop(
            "Not signed in. Open one of the sign-in URLs that `flywheel up` printed, or make one with "
            "`.venv/bin/flywheel identity token --role viewer` and open the UI with `?identity=<token>`."
        )
    assert isinstance(who, Identity)
    return who


def _oidc(s: IdentitySettings) -> Identity:
    claims = st.user.to_dict()
    if not claims.get("is_logged_in"):
        st.title("Flywheel")
        st.info("Sign in to use Flywheel.")
        st.button("Sign in", type="primary", on_click=st.login, icon=":material/login:")
        st.stop()
    try:
        return identity_from_claims(claims, s)
    except IdentityError as e:
        st.error(f"Sign-in refused: {e.message}.")
        st.button("Sign out", on_click=st.logout, icon=":material/logout:")
        st.stop()
        raise  # unreachable: st.stop() raises


def current_identity() -> Identity:
    """The signed-in identity, or a sign-in prompt (or the reason sign-in was refused) and nothing else."""
    s = _settings_or_stop()
    if s.auth == "local-token":
        return _local_token(s)
    if s.auth == "oidc":
        return _oidc(s)
    return ANONYMOUS_VIEWER


def operator() -> Identity | None:
    """For a callback: the session's identity when it is an operator's, else None. Renders nothing, trusts no
    widget: the role is read again from the session (local-token) or from st.user (oidc)."""
    try:
        s = settings()
    except ValidationError:
        return None
    who: object = None
    if s.auth == "local-token":
        who = st.session_state.get(SESSION_KEY)
    elif s.auth == "oidc":
        claims = st.user.to_dict()
        try:
            who = identity_from_claims(claims, s) if claims.get("is_logged_in") else None
        except IdentityError:
            who = None
    return who if isinstance(who, Identity) and who.is_operator and not who.expired() else None


REFUSED = "Only an operator can {what}. You are signed in as a viewer."


def _sign_out() -> None:
    st.session_state.pop(SESSION_KEY, None)


def sidebar(who: Identity) -> None:
    """Who is signed in, and the way out."""
    mode = settings().auth
    st.markdown(f"**Signed in:** {who.name}  \n{who.role} · {who.how}" if mode != "viewer-only" else "**Viewer**")
    if mode == "local-token":
        st.button("Sign out", key="sign-out", on_click=_sign_out, icon=":material/logout:")
    elif mode == "oidc":
        st.button("Sign out", key="sign-out", on_click=st.logout, icon=":material/logout:")
    else:
        st.caption("This UI is read-only: operators upload, promote and roll back with the CLI "
                   "(`flywheel drop`, `flywheel promote`, `flywheel rollback`).")  # fmt: skip
