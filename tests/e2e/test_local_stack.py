"""The local loop end to end: `flywheel up`, a drop, a swap under load, a bad batch, rollback, restart."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.e2e.stack_harness import Up
from tests.helpers import eventually
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ROW = {
    "income": 5000.0,
    "expenses": 3000.0,
    "age": 40,
    "dependents": 1,
    "debt": 10000.0,
    "credit_score": 700,
    "tenure_years": 3.0,
    "region": "north",
}


def _models(up: Up) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(up.cli("models", "--model", "savings", "--json"))
    return rows


def test_the_local_loop(up: Up, tmp_path: Path) -> None:
    up.start()
    assert up.served() == [1, 1]
    # a probe without a key learns ready or not, nothing of what is served
    assert [loopback.get(url + "/readyz", timeout=5).json() for url in up.apis] == [{"ready": True}] * 2
    for url in up.apis:  # both models, served by every replica
        assert loopback.get(url + "/v1/models", timeout=5).status_code == 401  # keys checked, as in the cloud
        listing = loopback.get(url + "/v1/models", timeout=5, headers=up.auth).json()
        assert listing["default"] == "savings"
        assert {(m["name"], m["version"], m["ready"]) for m in listing["models"]} == {
            ("savings", 1, True), ("churn", 1, True)
        }  # fmt: skip
    churn_row = {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 2, "contract": "monthly",
                 "payment_method": "card"}  # fmt: skip
    churn_results: list[tuple[int, int | None]] = []

    # a drifted batch: every replica moves to v2 while a small load sees no failure
    results: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10, headers=up.auth) as client:
            i = 0
            while not stop.is_set():
                r = client.post(up.apis[i % 2] + "/v1/predict", json={"instances": [ROW]})
                results.append((r.status_code, r.json().get("model_version")))
                c = client.post(up.apis[i % 2] + "/v1/models/churn/predict", json={"instances": [churn_row]})
                churn_results.append((c.status_code, c.json().get("model_version")))
                i += 1
                stop.wait(0.005)  # paced: flat out, it spent a core of this process and of the replicas

    loader = threading.Thread(target=load)
    loader.start()
    try:
        drifted = tmp_path / "drifted.csv"
        up.cli("sample-data", "--rows", "8000", "--seed", "7", "--drift", "1.0", "--out", str(drifted))
        up.cli("drop", str(drifted), "--model", "savings")
        wait_for(lambda: up.served() == [2, 2], 180, interval=0.5, what="both replicas on v2")
    finally:
        stop.set()
        loader.join()
    assert results and {code for code, _ in results} == {200}
    assert {v for _, v in results} == {1, 2}
    assert set(churn_results) == {(200, 1)}  # the other model is untouched by savings' swap

    # a bad batch is quarantined with its reason; the served version does not move
    bad = tmp_path / "bad.csv"
    bad.write_text("income,expenses\n1,2\n")
    up.cli("drop", str(bad), "--model", "savings", "--no-check")  # drop itself refuses it; the trainer is tested here
    s3 = __import__("boto3").client(
        "s3",
        endpoint_url=up.env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )

    def quarantined() -> bool:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flywheel-local", Prefix="quarantine/").get("Contents", [])]
        return "quarantine/savings/bad.csv.error.json" in keys

    wait_for(quarantined, 120, interval=0.5, what="bad batch quarantined")
    key = "quarantine/savings/bad.csv.error.json"
    report = json.loads(s3.get_object(Bucket="flywheel-local", Key=key)["Body"].read())
    assert "missing column" in report["error"]
    assert up.served() == [2, 2]
    assert [m["version"] for m in _models(up)] == [1, 2]

    # every version is signed with the key pair made once under the state dir; the private key is never logged
    private = up.state / "signing" / "trainer-key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    for name, version in (("savings", 1), ("savings", 2), ("churn", 1)):
        s3.head_object(Bucket="flywheel-local", Key=f"models/{name}/versions/{version:06d}/manifest.sig")
    secret = private.read_text().splitlines()[1]
    logs = "\n".join(up.lines) + "".join(p.read_text(errors="replace") for p in (up.state / "logs").glob("*.log"))
    assert secret not in logs

    # roll back: every replica follows
    assert "production -> v1" in up.cli("rollback", "--model", "savings")
    wait_for(lambda: up.served() == [1, 1], 60, interval=0.5, what="both replicas back on v1")

    # restart: versions, aliases and data are still there
    assert up.stop() == 0
    # the reader thread may still be taking the last lines off the pipe after the process exited
    eventually(lambda: list(up.lines), lambda lines: any("] stopped (" in line for line in lines), 30,
               what="'stopped' printed on the way out")  # fmt: skip
    up.start()
    assert any("restored" in line for line in up.lines)
    assert up.served() == [1, 1]
    models = _models(up)
    assert [m["version"] for m in models] == [1, 2]
    assert [m["production"] for m in models] == [True, False]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flywheel-local", Prefix="data/")["Contents"]]
    assert keys == ["data/churn/seed-batch.csv", "data/savings/drifted.csv", "data/savings/seed-batch.csv"]
    assert up.stop() == 0
