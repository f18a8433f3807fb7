"""The MLflow mirror's connection: off unless MLFLOW_TRACKING_URI is set (MLflow's own variable), bounded so that an
MLflow that is down, slow or refusing never fails, delays or changes a retrain or a promotion (docs/mlflow.md).

Every request has a short timeout and no retry (the next event, or `flywheel mlflow sync`, retries), and a mirror
pass stops at its first failure or when its time budget is spent. Failures are returned, never raised: the caller
counts them (the trainer's `MlflowMirrorFailed` metric).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)
T = TypeVar("T")


class MirrorSettings(BaseSettings):
    """FLYWHEEL_MLFLOW_* (docs/settings.md); the tracking URI and credentials are MLflow's own variables."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MLFLOW_", extra="ignore")

    # `{model}` is the Flywheel model's name; without it, every model's runs go to this one experiment
    experiment: str = "{model}"
    registered_prefix: str = ""  # registered model name = prefix + Flywheel model name
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)  # one HTTP request
    budget_seconds: float = Field(default=30.0, gt=0, le=600)  # one mirror pass, all requests together
    # a Secrets Manager secret {"username", "password"} or {"token"}: read at each pass, never put in the environment
    # of the deployment (docs/deploy.md, "MLflow mirror")
    credentials_secret_id: str | None = None


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


class MirrorFailed(Exception):
    """One mirror step failed or the budget ran out; the message says which."""


@dataclass
class Mirror:
    """A mirror pass: an MLflow client and the clock of its budget."""

    client: Any
    settings: MirrorSettings
    started: float = field(default_factory=time.monotonic)

    def experiment_name(self, model: str) -> str:
        return self.settings.experiment.replace("{model}", model)

    def registered_name(self, model: str) -> str:
        return f"{self.settings.registered_prefix}{model}"

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One MLflow call, within the pass's budget; MirrorFailed naming `what` when it fails."""
        if time.monotonic() - self.started > self.settings.budget_seconds:
            raise MirrorFailed(f"{what}: the mirror's budget of {self.settings.budget_seconds:g} s is spent")
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # whatever MLflow raises (HTTP, REST, connection): the mirror's failure only
            raise MirrorFailed(f"{what}: {type(e).__name__}: {str(e)[:300]}") from e


CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def load_credentials(settings: MirrorSettings) -> None:
    """MLflow's credentials from the secret, into the variables MLflow reads at each request (a token, or a user
    name and password; a secret that changed shape leaves nothing stale). ValueError names the secret, never its
    value."""
    if not settings.credentials_secret_id:
        return
    import json

    from botocore.config import Config

    from flywheel.storage import secrets_client

    bounded = Config(connect_timeout=settings.timeout_seconds, read_timeout=settings.timeout_seconds,
                     retries={"max_attempts": 1})  # fmt: skip
    raw = secrets_client(config=bounded).get_secret_value(SecretId=settings.credentials_secret_id)["SecretString"]
    for name in CREDENTIAL_VARIABLES:
        os.environ.pop(name, None)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("token"), str) and doc["token"]:
        os.environ["MLFLOW_TRACKING_TOKEN"] = doc["token"]
    elif isinstance(doc, dict) and all(isinstance(doc.get(k), str) and doc[k] for k in ("username", "password")):
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            doc["username"],
            doc["password"],
        )
    else:
        raise ValueError(f"secret {settings.credentials_secret_id} holds neither a token nor a username and password")


def open_mirror(settings: MirrorSettings | None = None, budget: float | None = None) -> Mirror | None:
    """A client for MLFLOW_TRACKING_URI with the mirror's bounds, or None when the mirror is off. `budget` (seconds)
    shortens the pass's budget: what is left of a Lambda's time, say."""
    uri = tracking_uri()
    if uri is None:
        return None
    settings = settings or MirrorSettings()
    if budget is not None:
        settings = settings.model_copy(update={"budget_seconds": max(0.0, min(settings.budget_seconds, budget))})
    # read by MLflow's REST client at each request: one short attempt, the next event retries
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = f"{settings.timeout_seconds:g}"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient  # the client only (mlflow-skinny), imported when the mirror is on

    return Mirror(MlflowClient(tracking_uri=uri, registry_uri=uri), settings)
