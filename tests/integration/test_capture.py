"""Prediction capture on real replicas: ids in responses, captures in S3 matching what clients got, and S3
going away costs requests nothing (drops are counted, capture resumes)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from flywheel.feedback.captures import read
from flywheel.jobs.retrain import retrain
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import csv_bytes, eventually
from tests.integration.conftest import ROW, Replica, get_status, metric, predict, serving_version, train, wait_for

FAST = {"FLYWHEEL_CAPTURE_FLUSH_SECONDS": "0.3"}


def captured(s3: Any, bucket: str) -> list[dict[str, Any]]:
    table = read(s3, bucket, "savings")
    return [] if table is None else table.to_pylist()


def test_ids_are_returned_and_captures_hold_what_clients_got(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, **FAST)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    rows = [{**ROW, "income": 3000.0 + 100 * i, "credit_score": None if i == 1 else 700} for i in range(3)]
    mine = loopback.post(api.url + "/v1/predict", json={"instances": rows, "ids": ["order-1", "order-2", "order:3"]},
                      timeout=10).json()  # fmt: skip
    assert mine["ids"] == ["order-1", "order-2", "order:3"]
    made = predict(api.url, [ROW]).json()
    assert len(made["ids"]) == 1 and len(made["ids"][0]) == 32
    v2 = loopback.post(api.url + "/v2/models/savings/infer", timeout=10, json={
        "inputs": [{"name": k, "shape": [1], "datatype": "BYTES" if k == "region" else "FP64", "data": [v]}
                   for k, v in ROW.items()],
        "parameters": {"ids": ["v2-a"]}}).json()  # fmt: skip
    assert v2["parameters"] == {"ids": ["v2-a"]}

    wait_for(lambda: len(captured(stack.s3, stack.bucket)) >= 5, 60, what="captures written")
    by_id = {r["prediction_id"]: r for r in captured(stack.s3, stack.bucket)}
    for i, pid in enumerate(mine["ids"]):
        assert by_id[pid]["prediction"] == mine["predictions"][i]
        assert by_id[pid]["version"] == 1 and by_id[pid]["role"] == "production" and by_id[pid]["model"] == "savings"
        assert by_id[pid]["features"]["income"] == rows[i]["income"]
    assert by_id["order-2"]["features"]["credit_score"] is None  # a missing input is null, not NaN
    assert by_id[made["ids"][0]]["prediction"] == made["predictions"][0]
    assert by_id["v2-a"]["prediction"] == v2["outputs"][0]["data"][0]
    keys = [o["Key"] for o in stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="captures/savings/")["Contents"]]
    assert all(k.startswith("captures/savings/date=") and k.endswith(".parquet") for k in keys)
    # counted by the flush thread after its write: it may trail the file by a moment
    eventually(lambda: metric(api.url, "flywheel_captured_predictions_total", model="savings"), lambda n: n >= 5, 60,
               what="the captured predictions counted")  # fmt: skip


BAD_IDS = [(["a"], "one id per instance"), (["a", "b c"], r"ids\[1\]"), ("abc", "one id per instance"),
           (["a", "x" * 129], r"ids\[1\]"), ([1, 2], r"ids\[0\]")]  # fmt: skip


def test_bad_ids_are_refused_naming_the_field(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, **FAST)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    for ids, message in BAD_IDS:
        r = loopback.post(api.url + "/v1/predict", json={"instances": [ROW, ROW], "ids": ids}, timeout=10)
        assert r.status_code == 422 and r.json()["field"] == "ids", (ids, r.text)
        assert re.search(message, r.json()["error"]), r.json()


def test_s3_down_drops_captures_counted_and_requests_unaffected(
    stack: Stack, start_replica: Callable[..., Replica]
) -> None:
    port = free_port()

    def moto() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: get_status(f"http://127.0.0.1:{port}/moto-api/") in (200, 404), 60, what="moto")
        return proc

    endpoint, bucket = f"http://127.0.0.1:{port}", stack.bucket
    server = moto()
    s3 = s3_client(endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/a.csv", Body=csv_bytes(800, seed=1))
    assert retrain(TrainerSettings(bucket=bucket, cv_folds=2), s3).status == "promoted"
    api = start_replica(bucket, endpoint, **FAST)
    try:
        wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
        server.kill()
        server.wait()
        for _ in range(20):  # S3 is gone: every request still answered at once
            assert predict(api.url, [ROW]).status_code == 200
        wait_for(lambda: metric(api.url, "flywheel_capture_dropped_predictions_total", model="savings",
                                reason="s3") >= 20, 60, what="drops counted")  # fmt: skip
        server = moto()  # S3 is back (empty: moto keeps nothing): capture resumes
        s3.create_bucket(Bucket=bucket)
        ids = predict(api.url, [ROW]).json()["ids"]
        wait_for(lambda: ids[0] in {r["prediction_id"] for r in captured(s3, bucket)}, 60, what="capture resumed")
    finally:
        server.kill()
        server.wait()
