"""`flywheel up` and MLflow: an embedded server by default, the user's MLFLOW_TRACKING_URI when set, none with
`--no-mlflow`. Checked through MLflow's own client against the real servers: the seed retrains are runs and
registered versions, and MLflow's `production` alias follows Flywheel's, from the worker and from the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer
from tests.e2e.stack_harness import ROOT, Up, port_free
from tests.helpers import csv_bytes, eventually, wait_for

pytestmark = pytest.mark.e2e


def _stack_json(up: Up) -> dict[str, object]:
    doc: dict[str, object] = json.loads((up.state / "stack.json").read_text())
    return doc


def _mirrored(client: MlflowClient, model: str, registered: str | None = None) -> dict[str, str]:
    """{MLflow alias: the Flywheel version it points at} of `model`, once its v1 is a run and a registered version
    ({} until then)."""
    exp = client.get_experiment_by_name(model)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.`flywheel.role` = 'retrain'")
    if "1" not in {r.data.tags.get("flywheel.version") for r in runs}:
        return {}
    name = registered or model
    versions = {mv.version: mv.tags.get("flywheel.version") for mv in client.search_model_versions(f"name = '{name}'")}
    if "1" not in versions.values():
        return {}
    return {alias: str(versions[v]) for alias, v in client.get_registered_model(name).aliases.items()}


def _worker_environ(up: Up) -> dict[str, str]:
    """The environment `up` gave its worker (read from /proc: what the process really has)."""
    assert up.proc is not None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
            if ppid == up.proc.pid and b"app.local.worker" in cmdline:
                pairs = (stat.parent / "environ").read_bytes().split(b"\0")
                return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError("no worker process under `flywheel up`")


def _retrains_logged(up: Up, n: int) -> list[dict[str, Any]]:
    """The worker's first `n` "retrain finished" records (the handler logs one per retrain, as JSON)."""

    def read() -> list[dict[str, Any]]:
        text = (up.state / "logs" / "worker.log").read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if '"message":"retrain finished"' in line]

    return eventually(read, lambda found: len(found) >= n, 60, what=f"{n} retrains in the worker's log")


def test_up_starts_mlflow_and_mirrors_every_retrain_and_alias_move(up: Up, tmp_path: Path) -> None:
    up.mlflow = True
    up.start()
    url = up.mlflow_url
    banner = "\n".join(up.lines)
    assert f"  MLflow        {url}   (a run per retrain; registered models mirror the versions)" in banner, banner
    assert (up.state / "mlflow" / "mlflow.db").exists() and (up.state / "logs" / "mlflow.log").exists()
    assert _stack_json(up)["MLFLOW_TRACKING_URI"] == url  # the CLI in another terminal mirrors too
    assert _worker_environ(up)["MLFLOW_TRACKING_URI"] == url

    # the seed retrains (the worker waited for MLflow before the first one): runs, versions, production aliases
    client = MlflowClient(url)
    for model in ("savings", "churn"):

        def mirrored(model: str = model) -> dict[str, str]:
            return _mirrored(client, model)

        eventually(mirrored, lambda a: a == {"production": "1"}, 60, what=f"{model} v1 mirrored, production alias")
    assert all("mlflow" in r["timings"] for r in _retrains_logged(up, 2))  # a mirror pass in each seed retrain

    # a new version from a drop, then the CLI's rollback: MLflow's production follows both
    batch = tmp_path / "drifted.csv"
    batch.write_bytes(csv_bytes(3000, seed=7, drift=0.8))
    up.cli("drop", str(batch), "--model", "savings", "--wait")
    eventually(lambda: _mirrored(client, "savings"), lambda a: a == {"production": "2"}, 60,
               what="production -> v2 in MLflow")  # fmt: skip
    back = up.run_cli("rollback", "--model", "savings")
    assert back.returncode == 0, back.stderr
    assert "mlflow: production -> version" in back.stderr, back.stderr  # the CLI found MLflow in stack.json
    assert _mirrored(client, "savings") == {"production": "1"}
    sync = up.cli("mlflow", "sync", "--model", "savings")
    assert "already in step" in sync, sync

    # MLflow dies with `up`, however `up` dies (its server process too, not only `mlflow server`'s launcher)
    up.proc.kill()  # type: ignore[union-attr]
    up.proc.wait()  # type: ignore[union-attr]
    wait_for(lambda: port_free(up.mlflow_port), 30, interval=0.5, what="MLflow's port free after SIGKILL")


def test_an_mlflow_tracking_uri_already_set_is_used_and_none_is_started(up: Up, mlflow_server: MlflowServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"  # this test's names in the shared server
    up.env |= {"MLFLOW_TRACKING_URI": mlflow_server.url, "FLYWHEEL_MLFLOW_EXPERIMENT": prefix + "{model}",
               "FLYWHEEL_MLFLOW_REGISTERED_PREFIX": prefix}  # fmt: skip
    up.mlflow = True
    up.start()
    banner = "\n".join(up.lines)
    assert f"  MLflow        {mlflow_server.url}   (MLFLOW_TRACKING_URI: a run per retrain" in banner, banner
    assert not (up.state / "logs" / "mlflow.log").exists() and not (up.state / "mlflow").exists()
    assert port_free(up.mlflow_port)
    assert _stack_json(up)["MLFLOW_TRACKING_URI"] == mlflow_server.url
    client = MlflowClient(mlflow_server.url)
    eventually(lambda: _mirrored(client, prefix + "savings", prefix + "savings"), lambda a: a == {"production": "1"},
               60, what="savings v1 mirrored into the user's MLflow")  # fmt: skip
    assert up.stop() == 0


def test_no_mlflow_starts_none_and_no_child_mirrors(up: Up, mlflow_server: MlflowServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    # even with an MLflow named in the environment, `--no-mlflow` (the harness's default) turns the mirror off
    up.env |= {"MLFLOW_TRACKING_URI": mlflow_server.url, "FLYWHEEL_MLFLOW_EXPERIMENT": prefix + "{model}",
               "FLYWHEEL_MLFLOW_REGISTERED_PREFIX": prefix}  # fmt: skip
    up.start()
    assert "--no-mlflow" in up.argv()
    assert not any("MLflow" in line for line in up.lines), "\n".join(up.lines)
    assert not (up.state / "logs" / "mlflow.log").exists() and port_free(up.mlflow_port)
    assert "MLFLOW_TRACKING_URI" not in _stack_json(up)
    assert "MLFLOW_TRACKING_URI" not in _worker_environ(up)
    # the seed retrains ran without a mirror pass (its timing is recorded whenever one runs), and nothing arrived
    for retrain in _retrains_logged(up, 2):
        assert "mlflow" not in retrain["timings"], retrain
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(prefix + "savings") is None
    assert up.stop() == 0


def test_the_mlflow_port_in_use_is_named_before_anything_starts(up: Up) -> None:
    up.mlflow = True
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", up.mlflow_port))
        taken.listen()
        out = subprocess.run(up.argv(), cwd=ROOT, env=up.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{up.mlflow_port} (MLflow)" in out.stdout and "in use" in out.stdout, out.stdout
    assert not (up.state / "logs").exists()  # nothing was started
