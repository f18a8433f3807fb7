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


def open_mirror(settings: MirrorSettings | None = None) -> Mirror | None:
    """A client for MLFLOW_TRACKING_URI with the mirror's bounds, or None when the mirror is off."""
    uri = tracking_uri()
    if uri is None:
        return None
    settings = settings or MirrorSettings()
    # read by MLflow's REST client at each request: one short attempt, the next event retries
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = f"{settings.timeout_seconds:g}"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient  # the client only (mlflow-skinny), imported when the mirror is on

    return Mirror(MlflowClient(tracking_uri=uri, registry_uri=uri), settings)
