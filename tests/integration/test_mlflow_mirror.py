"""The MLflow mirror against a real `mlflow server` (SQLite, served artifacts) and moto's S3: a retrain is a run
and a registered version, MLflow's aliases follow Flywheel's, an MLflow that is down never stops a retrain, and
`flywheel mlflow sync` repairs what it missed."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flywheel.cli.main import main
from flywheel.jobs.retrain import Outcome, retrain
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import MlflowServer, Stack
from tests.helpers import csv_bytes


@pytest.fixture
def mirrored(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str]:
    """This test's own experiment and registered model names in the shared server."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("FLYWHEEL_MLFLOW_EXPERIMENT", prefix + "{model}")
    monkeypatch.setenv("FLYWHEEL_MLFLOW_REGISTERED_PREFIX", prefix)
    return MlflowClient(mlflow_server.url), prefix


def batch(stack: Stack, seed: int, drift: float = 0.0) -> Outcome:
    stack.put(f"data/savings/batch-{seed}.csv", csv_bytes(1500, seed=seed, drift=drift))
    return retrain(TrainerSettings(bucket=stack.bucket, cv_folds=2), s3_client(), model="savings")  # both estimators


def registry(stack: Stack) -> Registry:
    return Registry(stack.s3, stack.bucket, "savings")


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """MLflow alias -> the Flywheel version its registered version mirrors."""
    model = client.get_registered_model(name)
    return {a: client.get_model_version(name, v).tags["flywheel.version"] for a, v in model.aliases.items()}


def test_a_retrain_is_a_run_with_its_candidates_and_a_registered_version(
    stack: Stack, mirrored: tuple[MlflowClient, str]
) -> None:
    client, prefix = mirrored
    out = batch(stack, seed=1)
    assert out.status == "promoted" and out.mlflow == "mirrored", out
    manifest = registry(stack).manifest(1)
    exp = client.get_experiment_by_name(prefix + "savings")
    runs = client.search_runs([exp.experiment_id], "tags.`flywheel.role` = 'retrain'")
    assert len(runs) == 1
    run = runs[0]
    primary = manifest["gate"]["primary_metric"]
    assert run.data.params["estimator"] == manifest["estimator"]
    assert run.data.params["window_rows"] == str(manifest["data"]["window_rows"])
    assert len(run.data.params["schema_sha256"]) == 64
    assert run.data.metrics[f"holdout.candidate.{primary}"] == pytest.approx(manifest["metrics"]["candidate"][primary])
    assert run.data.metrics[f"holdout.baseline.{primary}"] == pytest.approx(manifest["metrics"]["baseline"][primary])
    assert run.data.metrics["data.rows"] == manifest["data"]["rows"]
    assert run.data.tags["flywheel.gate"] == "approved" and run.data.tags["flywheel.version"] == "1"
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(c.data.params["estimator"] for c in children) == sorted(manifest["cv_scores"])
    assert {c.data.tags["flywheel.chosen"] for c in children} >= {"True"}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "manifest.json")).read_text())
    assert logged["sha256"] == manifest["sha256"] and logged["data"]["batches"] == manifest["data"]["batches"]
    # the registered version: the served artifact's sha256 and signature state as tags; production follows v1
    (mv,) = client.search_model_versions(f"name = '{prefix}savings'")
    assert mv.tags["flywheel.sha256"] == manifest["sha256"] and mv.tags["flywheel.version"] == "1"
    assert mv.run_id == run.info.run_id
    assert aliases(client, prefix + "savings") == {"production": "1"}
    loaded = __import__("mlflow.sklearn").sklearn.load_model(f"models:/{prefix}savings@production")
    assert hasattr(loaded, "predict")


def test_the_aliases_follow_rollback_promote_and_a_canary(
    stack: Stack, mirrored: tuple[MlflowClient, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, prefix = mirrored
    name = prefix + "savings"
    batch(stack, seed=1)
    assert batch(stack, seed=2, drift=0.5).production_version == 2
    assert aliases(client, name) == {"production": "2"}
    assert main(["rollback", "--model", "savings"]) == 0
    assert aliases(client, name) == {"production": "1"}
    assert "mlflow: production -> version" in capsys.readouterr().err
    assert main(["promote", "2", "--model", "savings"]) == 0
    assert aliases(client, name) == {"production": "2"}
    # a canary: the candidate alias while it runs, production once it is promoted, candidate gone
    assert main(["rollout", "policy", "--model", "savings", "--mode", "canary", "--share", "0.5"]) == 0
    out = batch(stack, seed=3, drift=0.2)
    assert out.status == "rollout" and out.mlflow == "mirrored", out
    assert aliases(client, name) == {"production": "2", "candidate": "3"}
    assert main(["rollout", "promote", "--model", "savings"]) == 0
    assert aliases(client, name) == {"production": "3"}
    # MLflow never moves Flywheel: an alias moved by hand in MLflow changes nothing in the bucket
    client.set_registered_model_alias(name, "production", client.search_model_versions(f"name = '{name}'")[-1].version)
    assert registry(stack).alias().version == 3  # type: ignore[union-attr]


def test_mlflow_down_never_stops_a_retrain_and_sync_repairs_it(
    stack: Stack, mirrored: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client, prefix = mirrored
    # an MLflow that went away mid-life: its port answers nothing now
    gone = MlflowServer(tmp_path / "gone").start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", gone.url)
    gone.stop()
    out = batch(stack, seed=1)
    assert out.status == "promoted" and out.production_version == 1
    assert out.mlflow.startswith("failed: "), out.mlflow
    assert out.timings["mlflow"] < 15  # bounded: one short attempt, no retries
    # the Lambda counts it
    from lambdas.trainer import handler as trainer

    emitted = _metrics_of(trainer, out)
    assert emitted["MlflowMirrorFailed"] == 1
    # a slow MLflow (a port that takes the connection and never answers) is cut off by the timeout as well
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("FLYWHEEL_MLFLOW_TIMEOUT_SECONDS", "2")
        slow = batch(stack, seed=2, drift=0.5)
    assert slow.production_version == 2 and slow.mlflow.startswith("failed: "), slow.mlflow
    assert slow.timings["mlflow"] < 15

    # back: `flywheel mlflow sync` mirrors both versions and the alias; a second sync changes nothing
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    assert main(["mlflow", "sync", "--model", "savings"]) == 0
    versions = client.search_model_versions(f"name = '{prefix}savings'")
    assert sorted(v.tags["flywheel.version"] for v in versions) == ["1", "2"]
    assert aliases(client, prefix + "savings") == {"production": "2"}
    shas = {v.tags["flywheel.version"]: v.tags["flywheel.sha256"] for v in versions}
    assert shas == {str(v): registry(stack).manifest(v)["sha256"] for v in (1, 2)}
    assert main(["mlflow", "sync", "--model", "savings"]) == 0
    assert len(client.search_model_versions(f"name = '{prefix}savings'")) == 2


def _metrics_of(trainer: Any, outcome: Outcome) -> dict[str, float]:
    """What the trainer's _emit adds for this outcome (Powertools keeps them until flushed)."""
    trainer.metrics.clear_metrics()
    trainer._emit(outcome)
    found = {}
    for name, entry in trainer.metrics.metric_set.items():
        value = entry["Value"]
        found[name] = sum(value) if isinstance(value, list) else value
    trainer.metrics.clear_metrics()
    return found


def test_credentials_come_from_the_secret_at_each_pass(
    stack: Stack, mirrored: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.storage import secrets_client

    sm = secrets_client()
    name = f"mlflow-{uuid.uuid4().hex[:8]}"
    arn = sm.create_secret(Name=name, SecretString=json.dumps({"username": "ada", "password": "s3cret"}))["ARN"]
    monkeypatch.setenv("FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID", arn)
    for var in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(var, "")  # so that what the mirror sets is undone after the test
        monkeypatch.delenv(var)
    assert batch(stack, seed=1).mlflow == "mirrored"

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ada", "s3cret")
    # rotated to a token: the user name and password are gone, the token is used
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"token": "tok"}))
    out = batch(stack, seed=2, drift=0.5)
    assert out.mlflow == "mirrored"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok" and "MLFLOW_TRACKING_USERNAME" not in os.environ
    # a secret of another shape stops the mirror, named, never with its value; the retrain goes on
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"user": "x", "pw": "hunter2"}))
    out = batch(stack, seed=3, drift=0.2)
    assert out.production_version == 3 and out.mlflow.startswith("failed: ")
    assert "neither a token nor a username and password" in out.mlflow and "hunter2" not in out.mlflow
