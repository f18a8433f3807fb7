"""Settings and clients, created on first use and cached for the process (never at import time)."""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import ValidationError

from app.ui.api_client import ApiClient
from flywheel.data.batch_store import BatchStore, model_batches
from flywheel.errors import SchemaError
from flywheel.registry import signing
from flywheel.registry.signing import Verifier
from flywheel.registry.store import Registry
from flywheel.schema import Schema, load_schema
from flywheel.settings import CoreSettings, UISettings


@st.cache_resource(show_spinner=False)
def settings() -> UISettings:
    """UISettings from the environment, read once per process."""
    return UISettings()


def settings_or_stop() -> UISettings:
    """The settings, or an error on the page (naming the bad variable) and nothing else."""
    try:
        return settings()
    except ValidationError as e:
        st.error(f"Invalid UI settings (FLYWHEEL_* variables, docs/settings.md):\n\n{e}")
        st.stop()


@st.cache_resource(show_spinner=False)
def configured_schema(ref: str) -> Schema:
    """The schema named by FLYWHEEL_SCHEMA (what the form shows when the API cannot tell)."""
    return load_schema(ref)


def configured_schema_or_stop(ref: str) -> Schema:
    try:
        return configured_schema(ref)
    except SchemaError as e:
        st.error(f"FLYWHEEL_SCHEMA: {e.message}")
        st.stop()


@st.cache_resource(show_spinner=False)
def api(base_url: str) -> ApiClient:
    """One HTTP client (connection pool) per API URL, shared by every session, sending the UI's API key."""
    s = settings()
    key = s.api_key
    if not key and s.api_key_secret_id:  # the cloud: the key the stack generated for the UI
        from flywheel.storage import secrets_client

        key = str(secrets_client().get_secret_value(SecretId=s.api_key_secret_id)["SecretString"]).strip()
    return ApiClient(base_url, api_key=key)


@st.cache_resource(show_spinner=False)
def verifier() -> Verifier | None:
    """The replicas' signature check (KMS key or public key file), or None when the UI has neither."""
    s = settings()
    return signing.verifier(s.verify_kms_key_id, s.verify_public_key_file)


@st.cache_resource(show_spinner=False)
def s3() -> Any:
    from flywheel.storage import s3_client

    return s3_client()


@st.cache_resource(show_spinner=False)
def bucket_settings(bucket: str, model_name: str) -> CoreSettings:
    """The bucket layout (FLYWHEEL_*_PREFIX) for the UI's bucket, from the environment; `model_name` is the
    default model (FLYWHEEL_MODEL_NAME), whose batches may also lie directly under data/."""
    return CoreSettings(bucket=bucket, model_name=model_name)


def bucket_or_none() -> CoreSettings | None:
    """The bucket layout, or None (and a note on the page) when FLYWHEEL_BUCKET is not set."""
    s = settings()
    if not s.bucket:
        st.info(
            "FLYWHEEL_BUCKET is not set: this page reads the registry and the batches in the bucket. "
            "Set it (with read access to the bucket) and restart the UI."
        )
        return None
    return bucket_settings(s.bucket, s.model_name)


def registry(core: CoreSettings, name: str) -> Registry:
    """Model `name`'s versions and alias."""
    return Registry(s3(), core.bucket, name, core.models_prefix)


def batch_store(core: CoreSettings, name: str) -> BatchStore:
    """Model `name`'s batches and quarantine reports (the old layout included)."""
    return model_batches(s3(), core, name)


def mirror_note(registry: Registry) -> str:
    """After an operator moved an alias here: MLflow's aliases follow (when mirrored), said in one sentence; a
    failure is named and never undoes the move (docs/mlflow.md)."""
    from flywheel.tracking.mirror import after_alias_move

    done = after_alias_move(registry)
    if done is None:
        return ""
    if done.ok:
        return " MLflow's aliases follow."
    return f" MLflow's aliases did not follow ({done.error}): `flywheel mlflow sync --model {registry.name}` repairs."
