"""The model host inside a real replica: a bad version is never served, S3 down, pinned versions."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from flywheel.jobs.retrain import retrain
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import csv_bytes, eventually
from tests.integration.conftest import ROW, Replica, get_status, metric, predict, serving_version, train, wait_for


def _publish_broken(stack: Stack, kind: str) -> int:
    """A new version, derived from v1, with one thing wrong; the alias is moved to it."""
    registry = Registry(s3_client(), stack.bucket, "savings")
    manifest = registry.manifest(1)
    model = registry.model_bytes(1)
    if kind == "sha256":
        manifest["sha256"] = "0" * 64
    elif kind == "golden":
        manifest["golden"]["outputs"]["predictions"][0] += 1.0
    elif kind == "library":
        manifest["libraries"]["scikit-learn"] = "0.24.2"
    elif kind == "corrupt":
        model = b"not a pickle" + model[:100]
        manifest["sha256"] = hashlib.sha256(model).hexdigest()
    version = registry.publish(model, manifest)
    if kind == "missing":
        stack.s3.delete_object(Bucket=stack.bucket, Key=registry.version_key(version, "model.joblib"))
    registry.move_alias(version, registry.alias(), actor="test", reason=f"broken: {kind}")
    return version


@pytest.mark.parametrize("kind", ["sha256", "golden", "library", "missing", "corrupt"])
def test_a_bad_version_is_never_served(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], kind: str
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    bad = _publish_broken(stack, kind)
    wait_for(
        lambda: metric(api.url, "flywheel_model_reloads_total", model="savings", result="failure") >= 1,
        60,
        what="failure",
    )
    assert serving_version(api.url) == 1
    r = predict(api.url, [ROW])
    assert r.status_code == 200 and r.json()["model_version"] == 1
    # logged by the host thread just after it counts the failure
    eventually(api.output, lambda out: f"refusing v{bad}" in out, 60, what=f"'refusing v{bad}' logged")
    wait_for(lambda: metric(api.url, "flywheel_model_staleness_seconds", model="savings") > 0, 60, what="staleness")
    # rolling the alias back to v1 clears staleness
    registry = Registry(s3_client(), stack.bucket, "savings")
    registry.move_alias(1, registry.alias(), actor="test", reason="undo")
    wait_for(lambda: metric(api.url, "flywheel_model_staleness_seconds", model="savings") == 0, 60, what="fresh again")


def test_s3_down_keeps_serving(stack: Stack, start_replica: Callable[..., Replica], tmp_path: Any) -> None:
    """A private moto server that we kill: the replica stays ready and keeps answering."""
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: get_status(endpoint + "/moto-api/") in (200, 404), 60, what="moto")
        bucket = stack.bucket  # the name only: this bucket lives on the private server
        s3 = s3_client(endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="data/a.csv", Body=csv_bytes(800, seed=1))
        assert retrain(TrainerSettings(bucket=bucket, cv_folds=2), s3).status == "promoted"
        api = start_replica(bucket, endpoint)
        wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    finally:
        moto.kill()
        moto.wait()
    # the replica notices (boto3 retries first), and keeps serving through several failed polls
    wait_for(lambda: api.output().count("alias poll failed") >= 2, 60, "failed polls logged")
    for _ in range(10):
        assert get_status(api.url + "/readyz") == 200
        assert predict(api.url, [ROW]).json()["model_version"] == 1
    assert metric(api.url, "flywheel_model_ready", model="savings") == 1


def test_pinned_version(stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]) -> None:
    train(stack, seed=1)
    train(stack, seed=2, drift=1.0)
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_PINNED_VERSION="1")
    wait_for(lambda: serving_version(api.url) == 1, 60, what="pinned v1")
    assert loopback.get(api.url + "/v1/model", timeout=5).json()["source"] == "pinned"
