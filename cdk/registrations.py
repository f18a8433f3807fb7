"""The models a deployment registers at deploy time: one create-only `models/<name>/schema.json` each.

A registration is the model's schema, written once (`IfNoneMatch: "*"`) and never changed: a model that is
already registered, by an earlier deploy or by `flywheel models add`, is left alone (S3 answers 412
PreconditionFailed, which the custom resource ignores). A new schema needs a new model name. The keys and
the layout are the core's (flywheel/registry/registrations.py); this app does not import the core, tests/cdk keeps the
two equal.

Schemas are read here, at synth, from the repository: a built-in name is `flywheel/schemas/<name>.json`,
anything else a path to a JSON file inside the repository. A missing or malformed file fails the synth naming
the `models` context key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import custom_resources as cr
from constructs import Construct

from cdk.data_bucket import MODELS_PREFIX

#: flywheel.settings.MODEL_NAME: it becomes a key prefix (data/<name>/, models/<name>/) and a metric label.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SCHEMA_FILE = "schema.json"
BUILTIN_SCHEMAS_DIR = "flywheel/schemas"
#: What every schema has (flywheel.schema.Schema); the core checks the rest when it reads the registration.
REQUIRED_SCHEMA_KEYS = {"name": str, "task": str, "target": dict, "features": list}
RESOURCE_TYPE = "Custom::FlywheelModelRegistration"


class RegistrationError(ValueError):
    """A model of the `models` context value cannot be registered; the message names the key and the model."""


@dataclass(frozen=True)
class Registration:
    """One model to register: its name, the schema reference it was given, and the schema read from the file."""

    name: str
    schema_ref: str
    schema: dict[str, Any]

    @property
    def key(self) -> str:
        return schema_key(self.name)

    @property
    def body(self) -> str:
        """The object written: the schema file's JSON (normalised layout, same content)."""
        return json.dumps(self.schema, indent=2, sort_keys=True) + "\n"


def schema_key(name: str) -> str:
    """`models/<name>/schema.json` (flywheel.registry.registrations.schema_key)."""
    return f"{MODELS_PREFIX}{name}/{SCHEMA_FILE}"


def parse_models(value: Any) -> tuple[tuple[str, str], ...]:
    """`name=schema` pairs from `-c models=a=x,b=y`, a JSON list of such strings, or a JSON object (cdk.json)."""
    items: Any = value
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith(("[", "{")) else text.split(",")
    if isinstance(items, dict):
        if not all(isinstance(v, str) for v in items.values()):
            raise ValueError(f"expected name: schema with a schema name or path, got {value!r}")
        items = [f"{k}={v}" for k, v in items.items()]
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected name=schema pairs, got {value!r}")
    pairs: list[tuple[str, str]] = []
    for item in (i.strip() for i in items if i.strip()):
        name, sep, schema = (part.strip() for part in item.partition("="))
        if not sep or not name or not schema:
            raise ValueError(f"{item!r} is not name=schema")
        if name in (n for n, _ in pairs):
            raise ValueError(f"model {name!r} is listed twice")
        pairs.append((name, schema))
    return tuple(pairs)


def resolve(models: Sequence[tuple[str, str]], *, repo_root: Path) -> list[Registration]:
    """Read and check each model's schema file; RegistrationError names the first one that is wrong."""
    return [Registration(name, ref, _read_schema(name, ref, repo_root)) for name, ref in models]


def _schema_path(ref: str, repo_root: Path) -> Path | None:
    builtin = repo_root / BUILTIN_SCHEMAS_DIR / f"{ref}.json"
    if re.fullmatch(r"[A-Za-z0-9_-]+", ref) and builtin.is_file():
        return builtin
    path = (repo_root / ref).resolve()
    return path if path.is_file() and path.is_relative_to(repo_root.resolve()) else None


def _read_schema(name: str, ref: str, repo_root: Path) -> dict[str, Any]:
    where = f"context 'models': model {name!r} (schema {ref!r})"
    if not MODEL_NAME.fullmatch(name):
        raise RegistrationError(f"{where}: the name must match ^[a-z0-9][a-z0-9-]{{0,62}}$")
    path = _schema_path(ref, repo_root)
    if path is None:
        raise RegistrationError(
            f"{where}: no such schema: neither a built-in ({BUILTIN_SCHEMAS_DIR}/<name>.json) nor a file in the "
            "repository (paths are relative to the repository root)"
        )
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistrationError(f"{where}: {path.relative_to(repo_root.resolve())} is not JSON: {e}") from e
    if not isinstance(schema, dict):
        raise RegistrationError(f"{where}: the schema must be a JSON object")
    wrong = [key for key, kind in REQUIRED_SCHEMA_KEYS.items() if not isinstance(schema.get(key), kind)]
    if wrong or not schema["features"]:
        expected = ", ".join(f"{k} ({t.__name__})" for k, t in REQUIRED_SCHEMA_KEYS.items())
        raise RegistrationError(f"{where}: the schema needs {expected}, with at least one feature; wrong: {wrong}")
    return schema


class ModelRegistrations(Construct):
    """One custom resource per model: S3 PutObject of its schema.json, create-only, allowed on that key only."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        registrations: Sequence[Registration],
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        # The one function behind every AwsCustomResource of the stack (a singleton) logs here.
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.resources: dict[str, cr.AwsCustomResource] = {}
        for registration in registrations:
            call = cr.AwsSdkCall(
                service="S3",
                action="putObject",
                parameters={
                    "Bucket": bucket.bucket_name,
                    "Key": registration.key,
                    "Body": registration.body,
                    "ContentType": "application/json",
                    "IfNoneMatch": "*",  # create-only: a registered model keeps its schema
                },
                physical_resource_id=cr.PhysicalResourceId.of(registration.key),
                ignore_error_codes_matching="^PreconditionFailed$",  # already registered: leave it alone
            )
            self.resources[registration.name] = cr.AwsCustomResource(
                self,
                registration.name,
                resource_type=RESOURCE_TYPE,
                on_create=call,
                on_update=call,  # a changed schema is still create-only: the first one stays
                policy=cr.AwsCustomResourcePolicy.from_statements(
                    [
                        iam.PolicyStatement(
                            actions=["s3:PutObject"], resources=[bucket.arn_for_objects(registration.key)]
                        )
                    ]
                ),
                # The Lambda runtime's own SDK (it has IfNoneMatch); no npm install from the internet at deploy.
                install_latest_aws_sdk=False,
                log_group=self.log_group,
                # Deleting the stack (or dropping a model from the list) never deletes a registration.
                removal_policy=RemovalPolicy.RETAIN,
            )
