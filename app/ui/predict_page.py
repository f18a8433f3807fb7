"""Predict page: a form generated from the chosen model's schema; the API answers with the prediction and its
version."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from app.ui import clients, picker
from app.ui.api_client import ApiError, ApiUnavailable, Prediction, ServedModel
from app.ui.form_fields import ChoiceField, FormField, build_fields, to_instance
from flywheel.errors import NotFound
from flywheel.schema import Schema

LAST = "last_prediction"  # {model: its last Prediction}


def _key(model: str, schema: Schema, name: str) -> str:
    return f"feature:{model}:{schema.name}:{name}"


def _served_schema(served: ServedModel | None) -> Schema | None:
    try:
        return Schema.model_validate(served.manifest["schema"]) if served else None
    except (KeyError, ValidationError):
        return None


@st.cache_data(max_entries=64, show_spinner=False)
def _stats_from_registry(bucket: str, default_model: str, name: str, version: int) -> dict[str, Any] | None:
    """A version's training statistics from its manifest in the registry (immutable: cached without expiry)."""
    registry = clients.registry(clients.bucket_settings(bucket, default_model), name)
    stats: dict[str, Any] | None = registry.manifest(version).get("feature_stats")
    return stats


def _training_stats(name: str, served: ServedModel | None) -> dict[str, Any] | None:
    """The form's defaults: the served version's training statistics. The API gives them to operator keys only,
    so the UI reads them from the registry (its role may read models/); without a bucket, none."""
    if served is None:
        return None
    if "feature_stats" in served.manifest:
        return dict(served.manifest["feature_stats"])
    s = clients.settings()
    if not s.bucket:
        return None
    try:
        return _stats_from_registry(s.bucket, s.model_name, name, served.version)
    except (ClientError, BotoCoreError, NotFound):  # no defaults is fine: the form falls back to mid-range values
        return None


def _widget(field: FormField, key: str) -> Any:
    if isinstance(field, ChoiceField):
        return st.selectbox(field.label, field.options, index=field.index, key=key, help=field.help)
    if field.nullable and key not in st.session_state:
        # value=None keeps the widget clearable (empty = missing); the typical value is pre-filled.
        st.session_state[key] = field.default
    return st.number_input(
        field.label,
        min_value=field.min,
        max_value=field.max,
        value=None if field.nullable else field.default,
        step=field.step,
        format=field.format,
        key=key,
        help=field.help,
        placeholder="missing",
    )


def _reset(model: str, keys: list[str]) -> None:
    for key in keys:
        st.session_state.pop(key, None)
    st.session_state.get(LAST, {}).pop(model, None)


def _show(prediction: Prediction, schema: Schema) -> None:
    target = schema.target
    value = prediction.value
    shown = f"{value:,.2f}" if isinstance(value, int | float) else str(value)
    unit = f" {target.unit}" if target.unit else ""
    st.success(
        f"**{prediction.model} v{prediction.version}** predicts {target.name} = **{shown}**{unit}",
        icon=":material/check_circle:",
    )
    if prediction.probabilities:
        probs = pd.DataFrame(prediction.probabilities.items(), columns=["class", "probability"])
        st.bar_chart(probs, x="class", y="probability", horizontal=True, height=160)
    with st.expander("Request sent"):
        st.json({"instances": [prediction.request]})


def _schema(chosen: picker.Chosen, served: ServedModel | None, schema_ref: str) -> Schema:
    """The served version's schema (what the API validates against), else the registered one."""
    schema = _served_schema(served) or chosen.schema
    if schema is not None:
        return schema
    if chosen.default:
        return clients.configured_schema_or_stop(schema_ref)
    st.error(f"No schema for model {chosen.name!r}: the API does not serve it and no bucket is configured.")
    st.stop()


def render() -> None:
    s = clients.settings()
    chosen = picker.current()
    api = clients.api(s.api_url)
    served: ServedModel | None = None
    problem = ""
    try:
        served = api.served_model(chosen.name)
    except ApiError as e:
        problem = e.message
    schema = _schema(chosen, served, s.schema_ref)
    st.header(f"Predict {schema.target.name}")
    st.caption(f"Model **{chosen.name}**" + (f": {schema.description}" if schema.description else ""))
    stats = _training_stats(chosen.name, served)
    fields = build_fields(schema, stats)
    if served is None:
        st.warning(f"{problem}. The form shows schema {schema.name!r} with mid-range defaults.")
    elif stats:
        st.caption(f"Defaults: the medians (and most frequent categories) of v{served.version}'s training data.")
    keys = [_key(chosen.name, schema, f.name) for f in fields]

    with st.form("predict"):
        values: dict[str, Any] = {}
        columns = st.columns(2)
        for i, (field, key) in enumerate(zip(fields, keys, strict=True)):
            with columns[i % 2]:
                values[field.name] = _widget(field, key)
        submitted = st.form_submit_button("Predict", type="primary")
    st.button("Reset to typical values", on_click=_reset, args=(chosen.name, keys))

    last: dict[str, Prediction] = st.session_state.setdefault(LAST, {})
    if submitted:
        instance = to_instance(fields, values)
        last.pop(chosen.name, None)
        try:
            last[chosen.name] = api.predict(chosen.name, instance)
        except ApiUnavailable as e:
            st.warning(f"No prediction: {e.message}.", icon=":material/cloud_off:")
        except ApiError as e:
            where = ", ".join(f"{k} {v}" for k, v in e.detail.items() if k in ("instance", "field"))
            st.error(f"The API rejected the input ({e.status}): {e.message}" + (f" [{where}]" if where else ""))
    if chosen.name in last:
        _show(last[chosen.name], schema)
