"""Which models a deployment has: each is registered in the bucket as `models/<name>/schema.json`.

A registration is written once (create-only); a registered model's schema never changes (a new schema is
a new model name). Batches for model `<name>` go under `data/<name>/` (flywheel/names.py). A bucket laid out
the old way keeps working: its default model (`FLYWHEEL_MODEL_NAME` with `FLYWHEEL_SCHEMA`) counts as registered
even before its schema.json exists (the trainer writes it on its first run), and CSVs directly under `data/` are
its batches.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from flywheel.errors import ConflictError, NotFound, SchemaError
from flywheel.names import check_name
from flywheel.schema import Schema, load_schema
from flywheel.settings import MODEL_NAME, CoreSettings
from flywheel.storage import is_missing, is_precondition_failed

SCHEMA_FILE = "schema.json"


def schema_key(models_prefix: str, name: str) -> str:
    return f"{models_prefix}{name}/{SCHEMA_FILE}"


def _dump(schema: Schema) -> bytes:
    return json.dumps(schema.model_dump(mode="json"), indent=2, sort_keys=True).encode()


def register(s3: Any, bucket: str, name: str, schema: Schema, models_prefix: str = "models/") -> bool:
    """Register `name` with `schema`. True: created; False: already registered with the same schema.

    Raises ConflictError when `name` is registered with another schema (a new schema is a new model).
    """
    key = schema_key(models_prefix, check_name(name))
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=_dump(schema), ContentType="application/json", IfNoneMatch="*")
        return True
    except ClientError as e:
        if not is_precondition_failed(e):
            raise
    current = schema_of(s3, bucket, name, models_prefix)
    if current.model_dump(mode="json") != schema.model_dump(mode="json"):
        raise ConflictError(
            f"model {name!r} is registered with another schema ({current.name!r}); a registered model's schema "
            "never changes: register the new schema under a new model name",
            model=name,
        )
    return False


def schema_of(s3: Any, bucket: str, name: str, models_prefix: str = "models/") -> Schema:
    """The registered schema of `name` (NotFound when it is not registered)."""
    key = schema_key(models_prefix, name)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if is_missing(e):
            raise NotFound(f"model {name!r} is not registered (no s3://{bucket}/{key})", model=name) from e
        raise
    try:
        return Schema.model_validate(json.loads(body))
    except (ValueError, ValidationError) as e:
        raise SchemaError(f"s3://{bucket}/{key} is not a valid schema: {e}", schema=key) from e


def registered(s3: Any, bucket: str, models_prefix: str = "models/") -> dict[str, Schema]:
    """Every registered model (sorted by name) with its schema; an unreadable registration is skipped."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=models_prefix, Delimiter="/")
    names = sorted(
        p["Prefix"][len(models_prefix) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])
    )
    out: dict[str, Schema] = {}
    for name in names:
        if not MODEL_NAME.fullmatch(name):
            continue
        try:
            out[name] = schema_of(s3, bucket, name, models_prefix)
        except (NotFound, SchemaError):
            continue  # a folder without a (valid) registration: an old layout's leftovers, or being written
    return out


def models(s3: Any, settings: CoreSettings) -> dict[str, Schema]:
    """The models this deployment trains and serves: the registered ones, plus the default model from the
    settings when it is not registered yet (a bucket laid out the old way)."""
    found = registered(s3, settings.bucket, settings.models_prefix)
    if settings.model_name not in found:
        found[settings.model_name] = load_schema(settings.schema_ref)
    return dict(sorted(found.items()))


def schema_for(s3: Any, settings: CoreSettings, name: str) -> Schema:
    """The schema model `name` trains and serves with. The default model of a bucket laid out the old way is
    registered on first use with the schema from the settings (the registration is then what counts)."""
    try:
        return schema_of(s3, settings.bucket, name, settings.models_prefix)
    except NotFound:
        if name != settings.model_name:
            raise
    schema = load_schema(settings.schema_ref)
    register(s3, settings.bucket, name, schema, settings.models_prefix)
    return schema


def batch_schema(s3: Any, settings: CoreSettings, name: str) -> Schema:
    """The schema a batch of `name` is checked against, read only: its registration or, for the default model of
    a bucket laid out the old way (not registered yet), the settings' schema. NotFound for any other model."""
    try:
        return schema_of(s3, settings.bucket, name, settings.models_prefix)
    except NotFound:
        if name != settings.model_name:
            raise
    return load_schema(settings.schema_ref)
