"""The prediction API as a real process on loopback, reading moto's S3 server."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from flywheel.registry.model_loading import open_version
from flywheel.registry.store import Registry
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack
from tests.helpers import eventually
from tests.integration.conftest import (
    ROW,
    Replica,
    get_status,
    metric,
    metrics_text,
    predict,
    serving_version,
    train,
    wait_for,
)


def test_starts_unready_then_ready_after_first_model(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    api = start_replica(stack.bucket, moto_endpoint)
    assert get_status(api.url + "/healthz") == 200
    assert get_status(api.url + "/readyz") == 503
    assert get_status(api.url + "/v2/health/ready") == 503
    # a worker answers within milliseconds of the start: first "registrations not read yet", then "no model"
    r = eventually(lambda: predict(api.url, [ROW]), lambda r: "not read yet" not in r.json()["error"], 30,
                   what="the registrations read")  # fmt: skip
    assert r.status_code == 503 and "no model" in r.json()["error"]
    assert metric(api.url, "flywheel_model_ready", model="savings") == 0
    train(stack)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1 loaded")
    r = predict(api.url, [ROW, {**ROW, "region": "west", "credit_score": None}])
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == 1 and body["model"] == "savings" and len(body["predictions"]) == 2
    # the swap's gauges are set just after the model /readyz already reports
    eventually(lambda: metric(api.url, "flywheel_model_info", model="savings", version="1"), lambda v: v == 1, 60,
               what="flywheel_model_info of v1")  # fmt: skip
    model = loopback.get(api.url + "/v1/model", timeout=5).json()
    assert model["version"] == 1 and model["manifest"]["sha256"] and model["source"] == "alias"
    assert "golden" not in model["manifest"]  # no operator key (auth off): the public view


def test_swap_under_load_never_fails_or_mixes(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack, seed=1)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    instances = [{**ROW, "income": 2000.0 + 250 * i, "credit_score": 600 + 10 * i} for i in range(6)]
    results: list[tuple[int, dict[str, Any]]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(api.url + "/v1/predict", json={"instances": instances})
                results.append((r.status_code, r.json()))
                # paced: a loop flat out spent a core of this process and of the replica (the suite is CPU-bound on two
                # cores); each thread still has a request in flight most of the time, through every swap
                stop.wait(0.005)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(results) > 50, 60, what="load")
        train(stack, seed=2, drift=1.0)
        wait_for(lambda: any(b.get("model_version") == 2 for _, b in results[-20:]), 60, what="v2 served")
        wait_for(lambda: len(results) > 50 + 200, 60, what="more load")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert {code for code, _ in results} == {200}
    versions = {b["model_version"] for _, b in results}
    assert versions == {1, 2}
    # every response's predictions are exactly what the version it names predicts: no mix inside a batch
    registry = Registry(s3_client(), stack.bucket, "savings")
    frame = pd.DataFrame(instances)
    expected = {}
    for v in (1, 2):
        expected[v] = open_version(registry, v, None).load_model().predict(frame).tolist()
    assert expected[1] != expected[2]
    for _, body in results:
        assert body["predictions"] == pytest.approx(expected[body["model_version"]], rel=1e-9)
    # counted by the host thread just after the swap the responses already show
    eventually(lambda: (metric(api.url, "flywheel_model_reloads_total", model="savings", result="success"),
                        metric(api.url, "flywheel_model_staleness_seconds", model="savings")),
               lambda got: got == (2, 0), 60, what="(successful reloads, staleness) == (2, 0)")  # fmt: skip


def test_v2_protocol_round_trip(stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    assert loopback.get(api.url + "/v2/health/live").json() == {"live": True}
    meta = loopback.get(api.url + "/v2/models/savings").json()
    assert meta["versions"] == ["1"] and {i["name"] for i in meta["inputs"]} == set(ROW)
    rows = [ROW, {**ROW, "income": 9000.0}]
    inputs = [
        {"name": k, "shape": [2], "datatype": "BYTES" if k == "region" else "FP64", "data": [r[k] for r in rows]}
        for k in ROW
    ]
    for path in ("/v2/models/savings/infer", "/v2/models/savings/versions/1/infer"):
        r = loopback.post(api.url + path, json={"id": "req-7", "inputs": inputs}, timeout=5)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_version"] == "1" and out["id"] == "req-7"
        v1 = predict(api.url, rows).json()["predictions"]
        assert out["outputs"][0]["data"] == pytest.approx(v1)
    assert loopback.post(api.url + "/v2/models/savings/versions/9/infer", json={"inputs": inputs}).status_code == 404
    assert loopback.post(api.url + "/v2/models/other/infer", json={"inputs": inputs}).status_code == 404


def test_bad_requests_name_instance_and_field(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_MAX_INSTANCES="5", FLYWHEEL_MAX_BODY_BYTES="4096")
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    cases: list[tuple[Any, int, dict[str, Any]]] = [
        ([ROW, {**ROW, "colour": "red"}], 422, {"instance": 1, "field": "colour"}),
        ([{k: v for k, v in ROW.items() if k != "age"}], 422, {"instance": 0, "field": "age"}),
        ([ROW, ROW, {**ROW, "income": "lots"}], 422, {"instance": 2, "field": "income"}),
        ([{**ROW, "age": 130}], 422, {"instance": 0, "field": "age"}),
        ([{**ROW, "region": "mars"}], 422, {"instance": 0, "field": "region"}),
        ([{**ROW, "dependents": 1.5}], 422, {"instance": 0, "field": "dependents"}),
        ([ROW] * 6, 413, {"limit": 5}),
    ]
    for instances, status, detail in cases:
        r = predict(api.url, instances)
        assert r.status_code == status, (instances, r.text)
        body = r.json()
        assert body["error"] and all(body.get(k) == v for k, v in detail.items()), body
    big = loopback.post(api.url + "/v1/predict", content=b'{"instances": [' + b" " * 5000 + b"]}")
    assert big.status_code == 413 and "limit" in big.json()["error"]
    bad = loopback.post(api.url + "/v1/predict", content=b'{"instances": [')
    assert bad.status_code == 422 and "malformed JSON" in bad.json()["error"]
    assert loopback.post(api.url + "/v1/predict", json={"rows": []}).status_code == 422
    # the prediction paths (app/predict_lane.py): another method, an unknown model, a path that is not one of them
    wrong = loopback.get(api.url + "/v1/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST", wrong.text
    unknown = loopback.post(api.url + "/v2/models/nope/infer", json={"inputs": []})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"], unknown.text
    assert loopback.post(api.url + "/v1/models/savings/predict/extra", json={}).status_code == 404
    # none of that hurt the server
    assert predict(api.url, [ROW]).status_code == 200
    text = metrics_text(api.url)
    assert 'flywheel_http_request_duration_seconds_count{model="savings",route="/v1/predict",status="422"}' in text
    assert 'flywheel_http_request_duration_seconds_count{model="savings",route="/v1/predict",status="413"}' in text
    assert 'flywheel_http_request_duration_seconds_count{model="",route="/v1/predict",status="405"}' in text
    assert 'flywheel_http_request_duration_seconds_count{model="",route="/v2/models/{name}/infer",status="404"}' in text


def test_metrics_names_and_labels(api_replicas: list[str]) -> None:
    url = api_replicas[0]
    names = [
        'flywheel_http_request_duration_seconds_bucket{le="0.005",model="savings",route="/v1/predict",status="200"}',
        'flywheel_http_request_duration_seconds_count{model="",route="/readyz",status="200"}',
        "flywheel_http_requests_in_flight ",
        'flywheel_predictions_total{model="savings",version="1"} 20.0',
        'flywheel_batch_size_count{model="savings"} ',
        'flywheel_model_info{model="savings",version="1"} 1.0',
        'flywheel_model_version{model="savings"} 1.0',
        'flywheel_model_ready{model="savings"} 1.0',
        'flywheel_model_reloads_total{model="savings",result="success"} 1.0',
        'flywheel_model_reload_duration_seconds_count{model="savings"} 1.0',
        'flywheel_model_staleness_seconds{model="savings"} 0.0',
        'flywheel_prediction_value_count{model="savings"} 20.0',
    ]

    def missing() -> list[str]:
        text = metrics_text(url)
        return [name for name in names if name not in text]

    # the swap's gauges and counters are set by the host thread just after /readyz sees the model
    eventually(missing, lambda left: not left, 60, what="these series in /metrics (last seen: the ones missing)")
    assert "_created" not in metrics_text(url)


def test_drift_gauges_follow_inputs(stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    from flywheel.data.sample_data import savings

    shifted = savings(300, seed=9, drift=1.0).drop(columns=["monthly_savings"])
    instances = json.loads(shifted.to_json(orient="records"))
    assert predict(api.url, instances).status_code == 200
    eventually(lambda: metric(api.url, "flywheel_feature_drift_psi", model="savings", feature="income"),
               lambda psi: psi > 0.25, 10, what="income's drift above 0.25")  # fmt: skip
    assert metric(api.url, "flywheel_feature_drift_psi", model="savings", feature="tenure_years") < 0.1
    assert metric(api.url, "flywheel_prediction_drift_psi", model="savings") > 0


def test_sigterm_drains_in_flight_requests(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    body = json.dumps({"instances": [{**ROW, "income": 1000.0 + i} for i in range(10_000)]}).encode()
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        """Half the body now, the rest once SIGTERM has been sent: the request is surely in flight meanwhile
        (predictions take milliseconds on the fast path, so a fast request could finish before the signal)."""
        yield body[: len(body) // 2]
        release.wait(60)  # set as soon as the four are seen in flight
        yield body[len(body) // 2 :]

    responses: list[httpx.Response] = []

    def send() -> None:
        responses.append(loopback.post(api.url + "/v1/predict", content=slow_body(), timeout=30,
                                    headers={"content-type": "application/json"}))  # fmt: skip

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    # all four accepted and still running (the scrape, on the metrics port, is not an API request)
    wait_for(lambda: metric(api.url, "flywheel_http_requests_in_flight") >= 4, 60, "requests in flight", 0.02)
    threading.Timer(0.5, release.set).start()  # the rest of the bodies arrive while the replica drains
    # uvicorn drains, then re-raises the signal so the parent sees how it ended
    assert api.stop(signal.SIGTERM, timeout=60) in (0, -signal.SIGTERM)
    assert "Waiting for connections to close" in api.output() or "Shutting down" in api.output()
    for t in senders:
        t.join()
    assert len(responses) == 4
    for r in responses:
        assert r.status_code == 200 and len(r.json()["predictions"]) == 10_000
    assert get_status(api.url + "/healthz") == 0  # stopped accepting


def test_classifier_returns_probabilities(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.jobs.retrain import retrain
    from flywheel.settings import TrainerSettings
    from tests.helpers import csv_bytes

    stack.put("data/churn.csv", csv_bytes(1500, seed=1, dataset="churn"))
    assert retrain(TrainerSettings(bucket=stack.bucket, schema_ref="churn"), s3_client()).status == "promoted"
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    row = {"tenure_months": 3, "monthly_charges": 90.0, "support_calls": 4, "contract": "monthly",
           "payment_method": None}  # fmt: skip
    body = predict(api.url, [row]).json()
    assert body["predictions"][0] in {"yes", "no"}
    assert set(body["probabilities"][0]) == {"no", "yes"}
    assert sum(body["probabilities"][0].values()) == pytest.approx(1.0)
    counted = {"class": body["predictions"][0]}  # a worker writes its counts up to 0.1 s after answering
    eventually(lambda: metric(api.url, "flywheel_predicted_class_total", model="savings", **counted), lambda n: n == 1,
               10, what=f"one {counted} counted")  # fmt: skip
