"""boto3 clients, created on demand (never at import). Endpoints come from boto3's own AWS_ENDPOINT_URL."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=3,
    read_timeout=30,
    max_pool_connections=16,
)


def s3_client(**kwargs: Any) -> Any:
    """An S3 client; honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and the usual credential chain."""
    return boto3.client("s3", config=_CONFIG, **kwargs)


def sqs_client(**kwargs: Any) -> Any:
    return boto3.client("sqs", config=_CONFIG, **kwargs)


def kms_client(**kwargs: Any) -> Any:
    """A KMS client (model-version signing); honours AWS_ENDPOINT_URL like the others."""
    return boto3.client("kms", config=_CONFIG, **kwargs)


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def is_precondition_failed(e: ClientError) -> bool:
    return error_code(e) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def is_missing(e: ClientError) -> bool:
    return error_code(e) in {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}


def is_not_modified(e: ClientError) -> bool:
    return error_code(e) in {"304", "NotModified"}


def secrets_client(config: Config | None = None, **kwargs: Any) -> Any:
    """A Secrets Manager client (API key stores, the UI's key and sign-in settings, MLflow's credentials);
    `config` tightens the shared one (timeouts, retries)."""
    return boto3.client("secretsmanager", config=_CONFIG.merge(config) if config else _CONFIG, **kwargs)
