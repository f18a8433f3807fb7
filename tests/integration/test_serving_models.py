"""Several models in one bucket, one `flywheel serve` replica: independent hot swaps under load, discovery of a
model registered while serving, unknown models, readiness over every model, per-model metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd
import pytest

from flywheel.jobs.retrain import retrain
from flywheel.registry import registrations
from flywheel.registry.model_loading import open_version
from flywheel.registry.store import Registry
from flywheel.schema import load_schema
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack
from tests.helpers import csv_bytes, eventually
from tests.integration.conftest import ROW, Replica, metric, metrics_text, wait_for

CHURN = {"tenure_months": 3, "monthly_charges": 90.0, "support_calls": 4, "contract": "monthly", "payment_method": None}
ROWS = {"savings": ROW, "churn": CHURN, "savings-eu": ROW}
DATASET = {"savings": "savings", "churn": "churn", "savings-eu": "savings"}


def publish(stack: Stack, name: str, seed: int = 1, drift: float = 0.0) -> int:
    """Register `name` (its built-in schema), upload a batch under data/<name>/ and run the trainer for it."""
    dataset = DATASET[name]
    registrations.register(stack.s3, stack.bucket, name, load_schema(dataset))
    stack.put(f"data/{name}/batch-{seed}.csv", csv_bytes(1200, seed=seed, drift=drift, dataset=dataset))
    # a linear model and a lenient gate: these tests are about serving, not model selection
    settings = TrainerSettings(bucket=stack.bucket, model_name=name, schema_ref=dataset, estimators="linear",
                               cv_folds=2, gate_tolerance=1.0)  # fmt: skip
    outcome = retrain(settings, s3_client())
    assert outcome.status == "promoted", outcome
    assert outcome.production_version is not None
    return outcome.production_version


def start(start_replica: Callable[..., Replica], stack: Stack, endpoint: str, **env: str) -> Replica:
    return start_replica(stack.bucket, endpoint, FLYWHEEL_DISCOVER_INTERVAL_SECONDS="0.3", **env)


def version_of(url: str, name: str) -> int | None:
    r = loopback.get(f"{url}/v1/models", timeout=5)
    return next((m["version"] for m in r.json()["models"] if m["name"] == name), None)


#: what /metrics says of a model once its host has loaded v1 then v2 (swap_figures)
SWAPPED_TO_V2 = {"reloads succeeded": 2, "info of v2": 1, "ready": 1, "staleness": 0}


def swap_figures(url: str, name: str) -> dict[str, float]:
    return {
        "reloads succeeded": metric(url, "flywheel_model_reloads_total", model=name, result="success"),
        "info of v2": metric(url, "flywheel_model_info", model=name, version="2"),
        "ready": metric(url, "flywheel_model_ready", model=name),
        "staleness": metric(url, "flywheel_model_staleness_seconds", model=name),
    }


def expected_outputs(stack: Stack, name: str, versions: list[int], rows: list[dict[str, Any]]) -> dict[int, Any]:
    """What each version computes for `rows` (probabilities for a classifier): the reference for responses."""
    registry = Registry(s3_client(), stack.bucket, name)
    frame = pd.DataFrame(rows)
    out = {}
    for v in versions:
        model = open_version(registry, v, None).load_model()
        out[v] = model.predict_proba(frame).ravel().tolist() if name == "churn" else model.predict(frame).tolist()
    assert out[versions[0]] != out[versions[-1]]
    return out


def test_two_models_swap_independently_under_load(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    publish(stack, "savings")
    publish(stack, "churn")
    api = start(start_replica, stack, moto_endpoint)
    wait_for(lambda: loopback.get(api.url + "/readyz", timeout=10).status_code == 200, 60, what="both loaded")
    assert {m["name"]: m["version"] for m in loopback.get(api.url + "/v1/models").json()["models"]} == {
        "savings": 1,
        "churn": 1,
    }
    instances = {
        "savings": [{**ROW, "income": 2000.0 + 250 * i} for i in range(4)],
        "churn": [{**CHURN, "support_calls": i, "monthly_charges": 40.0 + 20 * i} for i in range(4)],
    }
    paths = [("savings", "/v1/models/savings/predict"), ("churn", "/v1/models/churn/predict"),
             ("savings", "/v1/predict")]  # fmt: skip
    results: list[tuple[str, int, dict[str, Any]]] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while not stop.is_set():
                name, path = paths[i % len(paths)]
                r = client.post(api.url + path, json={"instances": instances[name]})
                results.append((name, r.status_code, r.json()))
                i += 1
                # paced: a loop flat out spent a core of this process and of the replica (the suite is CPU-bound on two
                # cores); each thread still has a request in flight most of the time, through every swap
                stop.wait(0.005)

    def served(name: str, version: int) -> bool:
        return any(n == name and b.get("model_version") == version for n, _, b in results[-30:])

    workers = [threading.Thread(target=hammer, args=(k,)) for k in range(6)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(results) > 60, 60, what="load")
        publish(stack, "savings", seed=2, drift=1.0)
        wait_for(lambda: served("savings", 2), 60, what="savings v2 served")
        # churn did not move: its host never reloaded (its one load is counted just after it became ready)
        eventually(lambda: metric(api.url, "flywheel_model_reloads_total", model="churn", result="success"),
                   lambda n: n == 1, 60, what="churn's reloads succeeded == 1")  # fmt: skip
        assert version_of(api.url, "churn") == 1
        publish(stack, "churn", seed=2, drift=1.0)
        wait_for(lambda: served("churn", 2), 60, what="churn v2 served")
        mark = len(results)
        wait_for(lambda: len(results) > mark + 150, 60, what="more load")
    finally:
        stop.set()
        for w in workers:
            w.join()
    failed = [(n, code, body) for n, code, body in results if code != 200]
    assert not failed, failed[:3]
    for name in ("savings", "churn"):
        bodies = [b for n, _, b in results if n == name]
        assert {b["model_version"] for b in bodies} == {1, 2}
        assert {b["model"] for b in bodies} == {name}
        expected = expected_outputs(stack, name, [1, 2], instances[name])
        for b in bodies:  # each response is exactly what the version it names computes
            got = [x for p in b["probabilities"] for x in p.values()] if name == "churn" else b["predictions"]
            assert got == pytest.approx(expected[b["model_version"]], rel=1e-9)
        # the host thread counts a swap just after the responses show it
        eventually(lambda name=name: swap_figures(api.url, name), lambda got: got == SWAPPED_TO_V2, 60,
                   what=f"{name}'s second load in /metrics: {SWAPPED_TO_V2}")  # fmt: skip
        assert metric(api.url, "flywheel_predictions_total", model=name, version="2") > 0
        assert metric(api.url, "flywheel_batch_size_count", model=name) > 0
    reload_timed = 'flywheel_model_reload_duration_seconds_count{model="churn"} 2.0'
    text = eventually(lambda: metrics_text(api.url), lambda t: reload_timed in t, 60, what=reload_timed)
    assert (
        'flywheel_http_request_duration_seconds_count{model="churn",route="/v1/models/{name}/predict",status="200"}'
        in text
    )
    assert 'flywheel_http_request_duration_seconds_count{model="savings",route="/v1/predict",status="200"}' in text
    assert 'flywheel_prediction_value_count{model="savings"}' in text
    assert 'flywheel_predicted_class_total{class="yes",model="churn"}' in text or 'class="no",model="churn"' in text


def test_readiness_discovery_and_unknown_models(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    publish(stack, "savings")
    publish(stack, "churn")
    churn = Registry(s3_client(), stack.bucket, "churn")
    # churn's production alias names a version that fails verification: churn has a version but cannot load it
    manifest = {**churn.manifest(1), "sha256": "0" * 64}
    broken = churn.publish(churn.model_bytes(1), manifest)
    churn.move_alias(broken, churn.alias(), actor="test", reason="broken")
    registrations.register(stack.s3, stack.bucket, "fraud", load_schema("churn"))  # registered, no version yet
    api = start(start_replica, stack, moto_endpoint)

    def ready() -> httpx.Response:
        return loopback.get(api.url + "/readyz", timeout=10)

    wait_for(lambda: ready().json()["models"].get("churn", {}).get("state") == "failed", 60, what="churn refused")
    wait_for(lambda: ready().json()["models"]["savings"]["state"] == "ready", 60, what="savings loaded")
    body = ready().json()
    assert ready().status_code == 503 and "churn" in body["reason"], body  # churn has a version: it blocks
    assert body["models"]["fraud"]["state"] == "unavailable"  # no version: it does not
    assert loopback.get(api.url + "/v2/health/ready").status_code == 503
    assert loopback.post(api.url + "/v1/models/savings/predict", json={"instances": [ROW]}).status_code == 200
    r = loopback.post(api.url + "/v1/models/churn/predict", json={"instances": [CHURN]})
    assert r.status_code == 503 and "no model loaded yet" in r.json()["error"]
    churn.move_alias(1, churn.alias(), actor="test", reason="undo")
    wait_for(lambda: ready().status_code == 200, 60, what="ready once churn loads")
    body = ready().json()
    assert body["model"] == "savings" and body["model_version"] == 1
    assert {n: m["state"] for n, m in body["models"].items()} == {"churn": "ready", "fraud": "unavailable",
                                                                   "savings": "ready"}  # fmt: skip
    index = {m["name"]: m for m in loopback.get(api.url + "/v2/models").json()}
    assert index["churn"]["state"] == "READY" and index["churn"]["version"] == "1"
    assert index["fraud"]["state"] == "UNAVAILABLE"
    assert loopback.get(api.url + "/v2/models/fraud/ready").status_code == 503
    assert loopback.get(api.url + "/v2/models/churn/ready").json() == {"name": "churn", "ready": True}

    # an unknown model: 404 naming the served ones, on every route that takes a name
    for method, path in (("POST", "/v1/models/nope/predict"), ("GET", "/v1/models/nope"),
                         ("GET", "/v2/models/nope"), ("POST", "/v2/models/nope/infer")):  # fmt: skip
        r = loopback.request(method, api.url + path, json={"instances": [ROW]})
        assert r.status_code == 404, (path, r.text)
        assert "nope" in r.json()["error"] and r.json()["models"] == ["churn", "fraud", "savings"]
    eventually(lambda: metric(api.url, "flywheel_http_request_duration_seconds_count", model="",
                              route="/v2/models/{name}", status="404"),
               lambda n: n == 1, 10, what="one 404 on /v2/models/{name} counted")  # fmt: skip

    # each model checks requests against its own schema
    r = loopback.post(api.url + "/v1/models/churn/predict", json={"instances": [ROW]})
    assert r.status_code == 422 and r.json()["field"] in set(ROW) - set(CHURN)

    # a model registered while serving is served without a restart; readiness does not flap meanwhile
    publish(stack, "savings-eu")
    wait_for(lambda: version_of(api.url, "savings-eu") == 1, 60, what="savings-eu discovered and loaded")
    r = loopback.post(api.url + "/v1/models/savings-eu/predict", json={"instances": [ROW]})
    assert r.status_code == 200 and r.json()["model"] == "savings-eu" and r.json()["model_version"] == 1
    assert ready().status_code == 200
    eventually(
        lambda: metric(api.url, "flywheel_model_ready", model="savings-eu"),
        lambda v: v == 1,
        60,
        what="flywheel_model_ready of savings-eu",
    )  # set just after the swap /v1/models already shows

    # a replica serving a listed subset: only those models, and /v1/predict's default is not among them
    sub = start(start_replica, stack, moto_endpoint, FLYWHEEL_SERVE_MODELS="churn")
    wait_for(lambda: loopback.get(sub.url + "/readyz", timeout=10).status_code == 200, 60, what="subset ready")
    assert [m["name"] for m in loopback.get(sub.url + "/v1/models").json()["models"]] == ["churn"]
    r = loopback.post(sub.url + "/v1/predict", json={"instances": [ROW]})
    assert r.status_code == 404 and r.json()["models"] == ["churn"]
    assert "savings" not in ready_models(sub.url)


def ready_models(url: str) -> dict[str, Any]:
    models: dict[str, Any] = loopback.get(url + "/readyz", timeout=10).json()["models"]
    return models
