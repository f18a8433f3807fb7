"""The model picker: which of the deployment's models every page works on (sidebar, session, URL).

The models are the registered ones (`models/<name>/schema.json`, flywheel.registry.registrations) plus the default
model (FLYWHEEL_MODEL_NAME with FLYWHEEL_SCHEMA) of a bucket laid out the old way. Without a bucket they are
the models the API serves, plus the default one. The choice lives in the session (the widget's key) and in
the URL (`?model=<name>`), so a link opens the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import clients
from app.ui.api_client import ApiError
from flywheel.errors import FlywheelError
from flywheel.registry import registrations
from flywheel.schema import Schema

KEY = "model"  # the selectbox's session key and the URL query parameter


@dataclass(frozen=True)
class Chosen:
    """The model the pages work on; `schema` is its registered one (None when only the API knows the model)."""

    name: str
    schema: Schema | None
    default: bool


@st.cache_data(ttl=10, show_spinner=False)
def _registered(bucket: str, default_model: str) -> dict[str, Schema]:
    """registrations.models() for the UI's bucket (cached briefly; an upload or Refresh clears it)."""
    return registrations.models(clients.s3(), clients.bucket_settings(bucket, default_model))


@st.cache_data(ttl=10, show_spinner=False)
def _served(api_url: str) -> list[str]:
    try:
        return clients.api(api_url).models()
    except ApiError:
        return []  # an API that is down, or does not list its models yet: the default model only


def clear() -> None:
    """Forget the cached model lists (after an action, or Refresh)."""
    _registered.clear()
    _served.clear()


def available() -> tuple[dict[str, Schema | None], str]:
    """The models to pick from (sorted by name) and, when they could not be listed, why."""
    s = clients.settings()
    if not s.bucket:
        names = set(_served(s.api_url)) | {s.model_name}
        return {n: None for n in sorted(names)}, ""
    try:
        return dict(_registered(s.bucket, s.model_name)), ""
    except (ClientError, BotoCoreError, FlywheelError) as e:
        return {s.model_name: None}, f"Cannot list the registered models in s3://{s.bucket}/: {e}"


def choose() -> Chosen:
    """Draw the picker (call inside `st.sidebar`); remember the choice in the session and the URL."""
    s = clients.settings()
    models, problem = available()
    names = list(models)
    linked = st.query_params.get(KEY)
    if st.session_state.get(KEY) not in names:  # a new session, or its model is gone
        fallback = s.model_name if s.model_name in names else names[0]
        st.session_state[KEY] = linked if linked in names else fallback
        if linked and linked not in names:
            st.warning(f"Model {linked!r} from the link is not registered here; showing {st.session_state[KEY]!r}.")
    name = str(st.selectbox("Model", names, key=KEY, help="every page works on this model"))
    if linked != name:
        st.query_params[KEY] = name
    if problem:
        st.warning(problem)
    return Chosen(name, models[name], name == s.model_name)


def current() -> Chosen:
    """The model chosen in the sidebar on this run (the pages' view of `choose()`)."""
    s = clients.settings()
    models, _ = available()
    name = st.session_state.get(KEY)
    if name not in models:
        name = s.model_name if s.model_name in models else next(iter(models))
    return Chosen(str(name), models.get(str(name)), name == s.model_name)
