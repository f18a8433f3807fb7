"""The MLflow mirror's settings read from CDK context (docs/deploy.md, "MLflow mirror"; docs/mlflow.md).

Off unless a tracking server is named, one of two ways:

- `mlflowTrackingUri`: an MLflow server at an https:// URL, with `mlflowCredentialsSecretArn` (a Secrets Manager
  secret, JSON {"username", "password"} or {"token"}) when it asks for credentials;
- `mlflowTrackingServerArn`: SageMaker's managed MLflow, authorized by IAM (SigV4) through the sagemaker-mlflow
  plugin, whose tracking URI is that ARN; `mlflowArtifactStoreUri` (the server's S3 artifact store) is where the
  client writes the artifacts itself.

Only https: the trainer Lambdas run outside any VPC (cdk/trainer.py), so they reach the server over the internet,
and what crosses it (the credentials, the pickled model) must be encrypted; a private or special-use address is
refused because they cannot reach it. A bad value fails the synth naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from constructs import Node

from cdk.access_settings import _KMS_KEY_ARN as KMS_KEY_ARN
from cdk.access_settings import _SECRET_ARN as SECRET_ARN
from cdk.context import (
    SettingsError,
    check_all,
    context_key,
    optional,
    parse_float,
    parse_str,
    parse_values,
    read_context,
)

#: SageMaker's managed MLflow (the `mlflow-tracking-server` resource of the sagemaker service).
TRACKING_SERVER_ARN = re.compile(
    r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/[A-Za-z0-9](-*[A-Za-z0-9]){0,255}"
)
#: An S3 bucket (and optional prefix) as SageMaker names a tracking server's artifact store.
ARTIFACT_STORE_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^*?#\s]*?))?/?")
#: Names that never resolve on the internet (RFC 6761, 6762; ICANN's .internal): the Lambdas cannot reach them.
SPECIAL_USE_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_HOST = re.compile(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
#: MLflow refuses '/' and ':' in a registered model name; a quote would break the mirror's search filter.
_REGISTERED_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,64}")
#: The judge Lambda's timeout (cdk/rollout_judge.py TIMEOUT); a mirror pass after its decision must end within it.
JUDGE_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, kw_only=True)
class MlflowSettings:
    """Context keys are the field names in camelCase; the last four are the FLYWHEEL_MLFLOW_* settings
    (flywheel/tracking/mlflow_client.py MirrorSettings), with the same defaults."""

    mlflow_tracking_uri: str | None = None
    mlflow_credentials_secret_arn: str | None = None
    #: The customer-managed KMS key that encrypts that secret, if any (kms:Decrypt through Secrets Manager only).
    mlflow_credentials_secret_key_arn: str | None = None
    mlflow_tracking_server_arn: str | None = None
    mlflow_artifact_store_uri: str | None = None
    mlflow_experiment: str = "{model}"
    mlflow_registered_prefix: str = ""
    mlflow_timeout_seconds: float = 5.0
    mlflow_budget_seconds: float = 30.0

    @property
    def enabled(self) -> bool:
        """The mirror is on when a tracking server is named."""
        return bool(self.mlflow_tracking_uri or self.mlflow_tracking_server_arn)

    @property
    def sagemaker(self) -> bool:
        """SageMaker's managed MLflow (IAM, SigV4) rather than a server at a URL."""
        return self.mlflow_tracking_server_arn is not None

    @property
    def artifact_store(self) -> tuple[str, str]:
        """(bucket, key prefix without slashes at the ends) of `mlflowArtifactStoreUri`."""
        match = ARTIFACT_STORE_URI.fullmatch(self.mlflow_artifact_store_uri or "")
        if match is None:
            raise SettingsError(f"context {context_key('mlflow_artifact_store_uri')!r} is not set")
        return match["bucket"], (match["prefix"] or "").strip("/")

    @property
    def environment(self) -> dict[str, str]:
        """What the trainer, its Batch job and the judge get: MLflow's tracking URI and the FLYWHEEL_MLFLOW_*
        settings ({} when the mirror is off). The credentials secret by ARN only, never its value."""
        if not self.enabled:
            return {}
        env = {
            "MLFLOW_TRACKING_URI": str(self.mlflow_tracking_server_arn or self.mlflow_tracking_uri),
            "FLYWHEEL_MLFLOW_EXPERIMENT": self.mlflow_experiment,
            "FLYWHEEL_MLFLOW_REGISTERED_PREFIX": self.mlflow_registered_prefix,
            "FLYWHEEL_MLFLOW_TIMEOUT_SECONDS": f"{self.mlflow_timeout_seconds:g}",
            "FLYWHEEL_MLFLOW_BUDGET_SECONDS": f"{self.mlflow_budget_seconds:g}",
        }
        if self.mlflow_credentials_secret_arn:
            env["FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID"] = self.mlflow_credentials_secret_arn
        return env

    @classmethod
    def from_context(cls, node: Node) -> MlflowSettings:
        """Read every field from the construct tree's context; unset keys keep the defaults above."""
        return cls.from_mapping(read_context(cls, node))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> MlflowSettings:
        """Build from snake_case keys (strings as `-c key=value` gives them), then validate."""
        seconds = ("mlflow_timeout_seconds", "mlflow_budget_seconds")
        texts = ("mlflow_experiment", "mlflow_registered_prefix")
        parsed = parse_values(
            cls,
            values,
            lambda name: parse_float if name in seconds else parse_str if name in texts else optional(parse_str),
        )
        settings = cls(**parsed)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError naming the first context key that is malformed or inconsistent."""
        if self.mlflow_tracking_uri is not None:
            check_tracking_uri(self.mlflow_tracking_uri)
        check_all(self, self._checks())

    def _checks(self) -> list[tuple[str, bool, str]]:
        uri, arn = self.mlflow_tracking_uri, self.mlflow_tracking_server_arn
        secret, key, store = (
            self.mlflow_credentials_secret_arn,
            self.mlflow_credentials_secret_key_arn,
            self.mlflow_artifact_store_uri,
        )
        off = "unset while the mirror is off (no mlflowTrackingUri or mlflowTrackingServerArn)"
        defaults = {f.name: f.default for f in fields(self)}
        return [
            (
                "mlflow_tracking_server_arn",
                arn is None or TRACKING_SERVER_ARN.fullmatch(arn) is not None,
                "a SageMaker MLflow tracking server ARN (arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/"
                "<name>)",
            ),
            ("mlflow_tracking_server_arn", uri is None or arn is None, "unset with mlflowTrackingUri: one server"),
            (
                "mlflow_credentials_secret_arn",
                secret is None or SECRET_ARN.fullmatch(secret) is not None,
                "a complete Secrets Manager secret ARN (with its 6-character suffix)",
            ),
            (
                "mlflow_credentials_secret_arn",
                secret is None or uri is not None,
                "only with mlflowTrackingUri (SageMaker's MLflow authorizes the roles by IAM)",
            ),
            (
                "mlflow_credentials_secret_key_arn",
                key is None or (secret is not None and KMS_KEY_ARN.fullmatch(key) is not None),
                "a KMS key ARN, and only with mlflowCredentialsSecretArn",
            ),
            (
                "mlflow_artifact_store_uri",
                (store is None) == (arn is None),
                "the tracking server's artifact store (s3://bucket[/prefix]), with mlflowTrackingServerArn only",
            ),
            (
                "mlflow_artifact_store_uri",
                store is None or ARTIFACT_STORE_URI.fullmatch(store) is not None,
                "s3://bucket or s3://bucket/prefix, without wildcards",
            ),
            (
                "mlflow_experiment",
                0 < len(self.mlflow_experiment) <= 400
                and "{" not in self.mlflow_experiment.replace("{model}", "")
                and "}" not in self.mlflow_experiment.replace("{model}", "")
                and self.mlflow_experiment.isprintable(),
                "an experiment name of 1..400 printable characters; {model} (the only placeholder) is the model's name",
            ),
            (
                "mlflow_registered_prefix",
                _REGISTERED_PREFIX.fullmatch(self.mlflow_registered_prefix) is not None,
                "0..64 letters, digits, '.', '_' or '-' (MLflow refuses '/' and ':' in registered model names)",
            ),
            ("mlflow_timeout_seconds", 0 < self.mlflow_timeout_seconds <= 60, "0 < seconds <= 60 (one request)"),
            ("mlflow_budget_seconds", 0 < self.mlflow_budget_seconds <= 600, "0 < seconds <= 600 (one mirror pass)"),
            (
                "mlflow_budget_seconds",
                self.mlflow_budget_seconds + self.mlflow_timeout_seconds < JUDGE_TIMEOUT_SECONDS,
                f"budget + mlflowTimeoutSeconds < {JUDGE_TIMEOUT_SECONDS} (the judge Lambda's timeout: a pass may "
                "last its budget plus one request)",
            ),
            # a key that would do nothing is a mistake worth naming (the server was meant to be set too)
            *((name, self.enabled or getattr(self, name) == default, off) for name, default in defaults.items()),
        ]


def check_tracking_uri(uri: str) -> None:
    """Raise SettingsError naming `mlflowTrackingUri` unless `uri` is an https:// URL of a host on the internet,
    without credentials, query or fragment."""
    key = context_key("mlflow_tracking_uri")

    def refuse(why: str) -> SettingsError:
        return SettingsError(f"context {key!r} = {uri!r}: {why}")

    if TRACKING_SERVER_ARN.fullmatch(uri):
        raise refuse("a SageMaker tracking server ARN: set mlflowTrackingServerArn instead (IAM, no credentials)")
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as e:
        raise refuse(f"not a URL ({e})") from e
    if parts.scheme != "https":
        raise refuse(
            "expected an https:// URL of the MLflow tracking server; plain http would carry the credentials and the "
            "model in the clear across the internet (the trainer Lambdas run outside any VPC), and other schemes "
            "(file:, databricks:, a local path) are not servers they can reach"
        )
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the URL would be a plain environment variable: use mlflowCredentialsSecretArn")
    if parts.query or parts.fragment:
        raise refuse("expected no query or fragment (MLflow appends its API paths to the URL)")
    host = (parts.hostname or "").lower()
    if port == 0 or not host:
        raise refuse("expected a host name (and a port from 1 to 65535, if any)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and not address.is_global:
        raise refuse(
            "a private, loopback or link-local address, which the trainer Lambdas (outside any VPC) cannot reach; "
            "give the server's public https:// name"
        )
    special = host == "localhost" or host.endswith(SPECIAL_USE_SUFFIXES)
    if address is None and (_HOST.fullmatch(host) is None or special):
        raise refuse(
            "expected a public DNS name (not localhost, a single label or a .local/.internal name, which the trainer "
            "Lambdas, outside any VPC, cannot resolve)"
        )
