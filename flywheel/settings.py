"""Settings from the environment (prefix FLYWHEEL_), one class per deployable; see docs/settings.md."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
#: a model's name: it becomes a key prefix (data/<name>/, models/<name>/) and a metric label
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: the estimators a trainer may try (flywheel/training/pipelines.py builds each; a unit test keeps them equal)
ESTIMATOR_NAMES = ("linear", "hgb")
BATCH_SHARE_OF_MEMORY = 16


class CoreSettings(BaseSettings):
    """What every part needs: where the bucket is and which model it keeps."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    bucket: str = Field(min_length=3, max_length=63)
    model_name: str = Field(default="savings", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    schema_ref: str = Field(default="savings", validation_alias="FLYWHEEL_SCHEMA")
    data_prefix: str = "data/"
    quarantine_prefix: str = "quarantine/"
    models_prefix: str = "models/"
    validated_prefix: str = "validated/"

    @field_validator("data_prefix", "quarantine_prefix", "models_prefix", "validated_prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not v.endswith("/") or v.startswith("/"):
            raise ValueError("prefixes end with '/' and do not start with one")
        return v


class TrainerSettings(CoreSettings):
    """The trainer (Lambda or local worker)."""

    max_batch_bytes: int | None = Field(default=None, gt=0)
    memory_mib: int | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("FLYWHEEL_MEMORY_MIB", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    )
    max_duplicate_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    train_window_rows: int = Field(default=1_000_000, ge=100)
    offload: Literal["none", "process", "batch"] = "none"
    offload_job_queue: str | None = None
    offload_job_definition: str | None = None
    offload_lock_seconds: int = Field(default=16_200, gt=0)  # a claimed hand-off holds the lock this long at most
    queue_url: str | None = None
    # a feedback file younger than this whose labels are not all captured yet waits (one delayed re-delivery,
    # at most SQS's 900 s) for the captures the API replicas still buffer (docs/captures.md); 0: never waits
    feedback_capture_wait_seconds: int = Field(default=120, ge=0, le=900)
    estimators: str = "linear,hgb"
    cv_folds: int = Field(default=3, ge=2, le=10)
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    gate_tolerance: float = Field(default=0.01, ge=0.0)
    gate_min_score: float | None = None
    train_threads: int = Field(default=0, ge=0)
    lock_ttl_seconds: int = Field(default=1200, gt=0)
    golden_rows: int = Field(default=8, ge=1, le=100)
    # how an approved version reaches production when the model sets no policy of its own (docs/rollouts.md):
    # direct moves the alias at once; shadow and canary start a rollout judged on live traffic
    rollout_mode: Literal["direct", "shadow", "canary"] = "direct"
    rollout_share: float = Field(default=0.1, gt=0.0, le=1.0)
    # signed versions (flywheel/registry/signing.py): a KMS key (cloud) or a PEM private key file (local); at most one
    signing_kms_key_id: str | None = None
    signing_key_file: str | None = None

    @model_validator(mode="after")
    def _one_signer(self) -> TrainerSettings:
        if self.signing_kms_key_id and self.signing_key_file:
            raise ValueError("set FLYWHEEL_SIGNING_KMS_KEY_ID or FLYWHEEL_SIGNING_KEY_FILE, not both")
        return self

    @field_validator("estimators")
    @classmethod
    def _known(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        unknown = [n for n in names if n not in ESTIMATOR_NAMES]
        if not names or unknown:
            raise ValueError(f"unknown estimators {unknown}; choose from {sorted(ESTIMATOR_NAMES)}")
        return ",".join(names)

    @property
    def estimator_names(self) -> list[str]:
        return self.estimators.split(",")

    @property
    def memory_bytes(self) -> int:
        """The memory this trainer may use: the setting, the Lambda's size, or the machine's."""
        if self.memory_mib:
            return self.memory_mib * MIB
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    @property
    def batch_limit_bytes(self) -> int:
        """The largest CSV accepted: validation streams, but training a batch needs ~16x its CSV size in
        memory (measured, docs/trainer.md), so a batch may take at most 1/16 of the trainer's memory."""
        return self.max_batch_bytes or self.memory_bytes // BATCH_SHARE_OF_MEMORY


class HttpLimits(BaseSettings):
    """What every HTTP listener (API, metrics, UI) refuses before a request reaches any code of ours: a request
    head over `max_header_bytes` or with more than `max_headers` headers (431), or not complete within
    `header_timeout_seconds` of the connection or the request starting (408); the connection is then closed."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=10, le=1000)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class ServeSettings(CoreSettings):
    """One API replica."""

    poll_interval_seconds: float = Field(default=5.0, gt=0)
    pinned_version: int | None = Field(default=None, ge=1)
    predict_threads: int = Field(default=1, ge=1)
    max_instances: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    batch_max_size: int = Field(default=256, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    drift_window: int = Field(default=2000, ge=100)
    serve_models: str = ""  # comma-separated model names; empty: every registered model
    discover_interval_seconds: float = Field(default=30.0, gt=0)
    # signed versions: with either set, a version without a valid signature is never served; with neither,
    # unsigned versions are accepted (every deployment Flywheel creates sets one)
    verify_kms_key_id: str | None = None
    verify_public_key_file: str | None = None
    # access (docs/security.md): API keys checked on every request but the health probes; `off` only by choice
    api_auth: Literal["api-keys", "off"] = "api-keys"
    api_keys_file: str | None = None
    api_keys_secret_id: str | None = None
    api_service_key_secret_ids: str = ""  # comma-separated secrets whose plain value is a key (the UI's)
    api_keys_refresh_seconds: float = Field(default=60.0, gt=0)
    max_inflight: int = Field(default=256, ge=1)  # requests beyond it get 429
    # one API key's share of those slots: a single client cannot take the replica from every other one
    max_inflight_per_key: int = Field(default=128, ge=1)
    body_timeout_seconds: float = Field(default=10.0, gt=0)  # a request body must arrive within it, else 408
    metrics_port: int = Field(default=9464, ge=1, le=65535)  # /metrics is served there only
    metrics_host: str = "0.0.0.0"  # `flywheel serve --host H` sets it to H unless given
    # rollouts (docs/rollouts.md): how often this process writes its per-version statistics for the judge, and
    # how many rows of production batches may wait for their shadow run before new ones are dropped (and counted)
    rollout_publish_seconds: float = Field(default=15.0, gt=0)
    shadow_queue_rows: int = Field(default=65_536, ge=1)
    # prediction capture (docs/captures.md): the share of requests captured (0: off), which models (empty: all)
    capture_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    capture_models: str = ""
    capture_prefix: str = "captures/"
    capture_flush_seconds: float = Field(default=30.0, gt=0)
    capture_max_rows: int = Field(default=100_000, ge=1)  # buffered in memory; beyond it captures are dropped

    @model_validator(mode="after")
    def _one_verifier(self) -> ServeSettings:
        if self.verify_kms_key_id and self.verify_public_key_file:
            raise ValueError("set FLYWHEEL_VERIFY_KMS_KEY_ID or FLYWHEEL_VERIFY_PUBLIC_KEY_FILE, not both")
        if self.api_keys_file and self.api_keys_secret_id:
            raise ValueError("set FLYWHEEL_API_KEYS_FILE or FLYWHEEL_API_KEYS_SECRET_ID, not both")
        if self.api_auth == "api-keys" and not (
            self.api_keys_file or self.api_keys_secret_id or self.api_service_key_secret_ids
        ):
            raise ValueError(
                "FLYWHEEL_API_AUTH=api-keys needs FLYWHEEL_API_KEYS_FILE or FLYWHEEL_API_KEYS_SECRET_ID "
                "(create a key with `flywheel apikey create`), or set FLYWHEEL_API_AUTH=off explicitly"
            )
        return self

    @field_validator("serve_models")
    @classmethod
    def _model_names(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        bad = [n for n in names if not MODEL_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"invalid model names {bad}: use a-z, 0-9 and '-'")
        return ",".join(dict.fromkeys(names))

    @property
    def served_names(self) -> list[str]:
        """The models this replica serves; empty: every registered one."""
        return self.serve_models.split(",") if self.serve_models else []


class UISettings(BaseSettings):
    """The Streamlit UI: a client of the API and (read-only) of the registry."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    api_url: str = "http://127.0.0.1:8080"
    # the UI's own API key: the key itself (local) or a Secrets Manager secret holding it (the cloud)
    api_key: str | None = Field(default=None, repr=False)
    api_key_secret_id: str | None = None
    # the Models page checks each version's signature as the replicas do (FLYWHEEL_VERIFY_* as for the API)
    verify_kms_key_id: str | None = None
    verify_public_key_file: str | None = None
    bucket: str | None = None
    model_name: str = "savings"
    schema_ref: str = Field(default="savings", validation_alias="FLYWHEEL_SCHEMA")


def trainer_settings(**overrides: Any) -> TrainerSettings:
    """Build trainer settings from the environment, with explicit overrides (tests, CLI flags)."""
    return TrainerSettings(**overrides)


def serve_settings(**overrides: Any) -> ServeSettings:
    return ServeSettings(**overrides)
