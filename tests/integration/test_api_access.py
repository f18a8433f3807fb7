"""Access to the prediction API, with real `flywheel serve` replicas: API keys (a file store and a Secrets Manager
store on moto's server), roles, revocation, load shedding (429), /metrics only on its own port, and the deploy
workflow's smoke test against an authenticated replica."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import orjson
import pytest

from flywheel.access import api_keys
from flywheel.errors import FlywheelError
from tests import loopback
from tests.conftest import REGION, Stack
from tests.helpers import eventually
from tests.integration.conftest import (
    ROOT,
    ROW,
    Replica,
    metric,
    read_responses,
    serving_version,
    stalled_post,
    train,
    wait_for,
)

CLI = [sys.executable, "-m", "flywheel.cli", "apikey"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env, check=False)


def _create(store_args: list[str], name: str, role: str = "client") -> str:
    """`flywheel apikey create`; returns the key it printed (its last line)."""
    done = _cli("create", "--name", name, "--role", role, *store_args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], tmp_path: Path
) -> tuple[Replica, Path]:
    train(stack)
    store = tmp_path / "api-keys.json"
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_API_AUTH="api-keys", FLYWHEEL_API_KEYS_FILE=str(store),
                        FLYWHEEL_API_KEYS_REFRESH_SECONDS="0.3")  # fmt: skip
    # no key exists yet: ready is all /readyz says (v1 is the only version there is)
    wait_for(lambda: loopback.get(api.url + "/readyz", timeout=10).status_code == 200, 60, what="ready")
    return api, store


def test_keys_roles_and_revocation(keyed: tuple[Replica, Path]) -> None:
    api, store = keyed
    body = {"instances": [ROW]}
    # the health probes stay open; everything else needs a key
    assert (
        loopback.get(api.url + "/healthz").status_code == 200 and loopback.get(api.url + "/readyz").status_code == 200
    )
    anonymous = loopback.post(api.url + "/v1/predict", json=body)
    assert anonymous.status_code == 401 and "API key" in anonymous.json()["error"]
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert loopback.post(api.url + "/v1/predict", json=body, headers=_bearer("fwk_nope_" + "x" * 40)).status_code == 401
    assert loopback.get(api.url + "/v2/models/savings").status_code == 401

    client = _create(["--file", str(store)], "checkout-service")
    operator = _create(["--file", str(store)], "alice", role="operator")
    assert client not in store.read_text() and api_keys.digest(client) in store.read_text()  # only hashes kept
    for key in (client, operator):  # both accepted after a reload (a reload may fall between the two writes)
        wait_for(lambda key=key: loopback.post(api.url + "/v1/predict", json=body, headers=_bearer(key)).status_code
                 == 200, 60, what="the new key accepted after a reload")  # fmt: skip
    assert loopback.post(api.url + "/v1/predict", json=body, headers={"X-API-Key": client}).status_code == 200
    # a slash too many is redirected only for a valid key, as when the key check ran before the router
    assert loopback.post(api.url + "/v1/predict/", json=body).status_code == 401
    assert (
        loopback.post(api.url + "/v1/predict/", json=body, headers=_bearer("fwk_nope_" + "x" * 40)).status_code == 401
    )
    moved = loopback.post(api.url + "/v1/models/savings/predict/", json=body, headers=_bearer(client))
    assert moved.status_code == 307 and moved.headers["location"] == "/v1/models/savings/predict"
    # /readyz: ready or not for anyone (the probe), what is served only for a key
    assert loopback.get(api.url + "/readyz").json() == {"ready": True}
    detail = loopback.get(api.url + "/readyz", headers=_bearer(client)).json()
    assert detail["ready"] and detail["model_version"] == 1 and "savings" in str(detail)
    # a client sees what it needs of the model; an operator sees the whole manifest
    public = loopback.get(api.url + "/v1/model", headers=_bearer(client)).json()["manifest"]
    assert public["schema"]["target"] and public["metrics"] and public["version"] == 1
    assert not {"golden", "data", "gate", "resources"} & set(public), sorted(public)
    full = loopback.get(api.url + "/v1/models/savings", headers=_bearer(operator)).json()["manifest"]
    assert full["golden"]["inputs"] and full["data"]["batches"]
    # /metrics is not on the API port, with or without a key; it is on the metrics port
    assert loopback.get(api.url + "/metrics", headers=_bearer(client)).status_code == 404
    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="unauthenticated"),
               lambda n: n >= 3, 10, what="3 unauthenticated requests counted")  # fmt: skip

    listed = _cli("list", "--file", str(store))
    assert "checkout-service" in listed.stdout and client not in listed.stdout
    key_id = client.split("_")[1]
    assert _cli("revoke", key_id, "--file", str(store)).returncode == 0
    wait_for(lambda: loopback.post(api.url + "/v1/predict", json=body, headers=_bearer(client)).status_code == 401, 60,
             what="the revoked key refused")  # fmt: skip
    assert loopback.post(api.url + "/v1/predict", json=body, headers=_bearer(operator)).status_code == 200
    unknown = _cli("revoke", key_id, "--file", str(store))
    assert unknown.returncode == 2 and key_id in unknown.stderr


def test_over_the_concurrency_limit_gets_429_not_a_crash(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    """Two requests whose bodies are still arriving take both places of FLYWHEEL_MAX_INFLIGHT=2 (held on purpose: a
    burst of requests need not overlap on a loaded machine); the next gets 429 with Retry-After, the two held ones
    are answered once their bodies arrive, and so is the next request. The requests-in-flight bound, taken once a
    body has arrived, is the same `Limit` (tests/unit/test_slots.py)."""
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_MAX_INFLIGHT="2", FLYWHEEL_BODY_TIMEOUT_SECONDS="60")
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    body = orjson.dumps({"instances": [{**ROW, "income": 1000.0 + i} for i in range(100)]})
    held = [stalled_post(api.url, declared=len(body), sent=body[:1]) for _ in range(2)]
    try:
        eventually(lambda: metric(api.url, "flywheel_http_requests_in_flight"), lambda n: n == 2, 30,
                   what="both stalled requests in flight")  # fmt: skip
        refused = loopback.post(api.url + "/v1/predict", content=body, timeout=30,
                                headers={"Content-Type": "application/json"})  # fmt: skip
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
        assert refused.json()["limit"] == 2, refused.text
        assert "over 2 request bodies being received" in refused.json()["error"], refused.text
        for sock in held:
            sock.sendall(body[1:])
        for sock in held:
            [(status, _, answer)], _ = read_responses(sock)
            assert status == 200 and len(orjson.loads(answer)["predictions"]) == 100, answer[:300]
    finally:
        for sock in held:
            sock.close()
    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="overloaded"),
               lambda n: n == 1, 10, what="the one refusal counted")  # fmt: skip
    after = loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, timeout=10)
    assert after.status_code == 200  # the replica is fine once the burst is over
    assert loopback.get(api.url + "/healthz").status_code == 200


def test_secrets_manager_store_service_key_and_smoke_test(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    sm = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name=REGION)
    store = sm.create_secret(Name=f"{stack.bucket}-api-keys", SecretString='{"keys": []}')["ARN"]
    ui_key = "u" * 48
    service = sm.create_secret(Name=f"{stack.bucket}-ui-key", SecretString=ui_key)["ARN"]
    train(stack)
    env = {"FLYWHEEL_API_AUTH": "api-keys", "FLYWHEEL_API_KEYS_SECRET_ID": store,
           "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS": service, "FLYWHEEL_API_KEYS_REFRESH_SECONDS": "0.3"}  # fmt: skip
    api = start_replica(stack.bucket, moto_endpoint, **env)
    wait_for(lambda: serving_version(api.url, ui_key) == 1, 60, what="v1")
    assert loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, headers=_bearer(ui_key)).status_code == 200

    key = _create(["--secret-id", store], "smoke-test")
    assert api_keys.digest(key) in sm.get_secret_value(SecretId=store)["SecretString"]
    wait_for(lambda: loopback.get(api.url + "/v1/model", headers=_bearer(key)).status_code == 200, 60, what="new key")

    smoke = [sys.executable, str(ROOT / "scripts" / "smoke_test.py"), "--api", api.url, "--timeout", "10"]
    without = subprocess.run(smoke, capture_output=True, text=True, timeout=60, check=False)
    assert without.returncode == 0 and "refuses requests without a key" in without.stdout, without.stderr
    done = subprocess.run([*smoke, "--api-key", key], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "predicted 3 rows" in done.stdout, done.stderr


def test_store_errors_name_the_store_and_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "keys.json"
    bad.write_text('{"keys": [{"id": "a1", "name": "x", "role": "admin", "sha256": "' + "0" * 64 + '"}]}')
    with pytest.raises(FlywheelError, match=r"keys\[0\] \(a1\)"):
        api_keys.FileStore(bad).load()
    bad.write_text("[]")
    with pytest.raises(FlywheelError, match="expected"):
        api_keys.FileStore(bad).load()
    auth = api_keys.Authenticator(api_keys.FileStore(tmp_path / "none.json"))
    assert len(auth) == 0 and auth.check(None) is None and auth.check("short") is None


def test_keys_that_cannot_be_reloaded_for_too_long_are_refused(tmp_path: Path) -> None:
    """A failed reload keeps the keys for a while (a Secrets Manager hiccup must not lock clients out), but a
    revocation must not be ignored for long: past max_stale_seconds every key is refused until a reload works."""
    store = api_keys.FileStore(tmp_path / "keys.json")
    key, record = api_keys.new_key("svc", "client", "test")
    store.save([record])
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    auth = api_keys.Authenticator(store, max_stale_seconds=0.5)
    assert auth.check(key) == record
    good = store.path.read_text()
    store.path.write_text("{broken")
    auth.refresh()
    assert auth.check(key) == record, "a failed reload keeps the keys loaded before"
    time.sleep(0.6)
    auth.refresh()
    assert auth.check(key) is None, "too stale: refused"
    store.path.write_text(good)
    auth.refresh()
    assert auth.check(key) == record
