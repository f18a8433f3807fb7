"""Fixtures that start real processes on loopback: `flywheel serve` replicas against moto's server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.jobs.retrain import retrain
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import csv_bytes, wait_for

__all__ = ["wait_for"]  # re-exported for the tests that import it from here

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


ROW = {"income": 5000.0, "expenses": 3000.0, "age": 40, "dependents": 1, "debt": 10000.0, "credit_score": 700,
       "tenure_years": 3.0, "region": "north"}  # fmt: skip


#: API URL -> its metrics port's URL, for the replicas started here (/metrics is not on the API port)
METRICS_URLS: dict[str, str] = {}


def metrics_text(url: str) -> str:
    """The exposition of replica `url` (its API URL or its metrics URL)."""
    return loopback.get(METRICS_URLS.get(url, url) + "/metrics", timeout=5).text


def metric(url: str, name: str, **labels: str) -> float:
    """Read one sample from /metrics (0 when absent); labels in any order (the exposition sorts them)."""
    text = metrics_text(url)
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def predict(url: str, instances: list[dict[str, Any]]) -> httpx.Response:
    return loopback.post(url + "/v1/predict", json={"instances": instances}, timeout=10)


def serving_version(url: str, key: str | None = None) -> int | None:
    """The version replica `url` serves; None while it serves none, or when it is too busy to answer in 10 s (a
    caller polls again: a loaded CI machine can hold a replica's answer that long). With API keys on, /readyz
    names the version only to a valid `key`."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    try:
        r = loopback.get(url + "/readyz", timeout=10, headers=headers)
    except httpx.TimeoutException:
        return None
    return r.json().get("model_version") if r.status_code == 200 else None


def get_status(url: str) -> int:
    try:
        return loopback.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def stalled_post(
    url: str, key: str | None = None, declared: int = 1000, sent: bytes = b"{", timeout: float = 30
) -> socket.socket:
    """A POST /v1/predict on a raw socket whose headers arrive whole and whose body stops after `sent` (of `declared`
    bytes): the replica waits for the rest. Send it (`sendall`) and `read_responses` to finish the request; `timeout`
    bounds each send and receive."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + sent)
    return sock


def read_responses(sock: socket.socket, count: int = 1) -> tuple[list[tuple[int, dict[str, str], bytes]], bytes]:
    """`count` HTTP/1.1 responses on `sock` in the order they came (status, headers, body; each with a
    Content-Length, as the replica sends), and whatever followed them."""
    buffer, out = b"", list[tuple[int, dict[str, str], bytes]]()
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        size = int(headers["content-length"])
        while len(buffer) < size:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buffer += chunk
        out.append((int(status_line.split()[1]), headers, buffer[:size]))
        buffer = buffer[size:]
    return out, buffer


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """Start `flywheel serve` subprocesses; each is stopped (SIGTERM) at teardown."""
    started: list[Replica] = []

    def start(bucket: str, endpoint: str | None = None, *, args: tuple[str, ...] = (), **env: str) -> Replica:
        """A replica; API keys off unless `env` configures them (tests/integration/test_api_access.py). `args`: more
        `flywheel serve` options (`--workers 2`)."""
        port, metrics_port = free_port(), free_port()
        log = tmp_path / f"serve-{port}.log"
        full_env = {
            **os.environ,
            "FLYWHEEL_BUCKET": bucket,
            "FLYWHEEL_POLL_INTERVAL_SECONDS": "0.6",
            "FLYWHEEL_API_AUTH": "off",
            "FLYWHEEL_METRICS_PORT": str(metrics_port),
            **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}),
            **env,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=ROOT,
            env=full_env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        replica = Replica(f"http://127.0.0.1:{port}", proc, log, f"http://127.0.0.1:{metrics_port}")
        METRICS_URLS[replica.url] = replica.metrics_url
        started.append(replica)
        # a replica imports scikit-learn and pandas before it listens: on a loaded 2-core machine that takes a while
        wait_for(lambda: proc.poll() is not None or get_status(replica.url + "/healthz") == 200, 120, what="healthz")
        assert proc.poll() is None, replica.output()
        return replica

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def train(stack: Stack, rows: int = 1500, seed: int = 1, drift: float = 0.0, key: str | None = None) -> int:
    """Put a batch under data/ and run the trainer; returns the production version."""
    stack.put(key or f"data/batch-{seed}.csv", csv_bytes(rows, seed=seed, drift=drift))
    # two folds: these tests are about what serves a version, not model selection (~0.7 s less per version)
    outcome = retrain(TrainerSettings(bucket=stack.bucket, cv_folds=2), s3_client())
    assert outcome.production_version is not None, outcome
    return outcome.production_version


@pytest.fixture
def api_replicas(stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]) -> list[str]:
    """Two running replicas with model v1 loaded that have served some predictions."""
    train(stack)
    replicas = [start_replica(stack.bucket, moto_endpoint) for _ in range(2)]
    row = {"income": 5000, "expenses": 3000, "age": 40, "dependents": 1, "debt": 1e4, "credit_score": 700,
           "tenure_years": 3.0, "region": "north"}  # fmt: skip
    for r in replicas:
        wait_for(lambda r=r: get_status(r.url + "/readyz") == 200, 30, what="readyz")
        for i in range(20):
            body = {"instances": [{**row, "income": 3000 + 100 * i}]}
            assert loopback.post(r.url + "/v1/predict", json=body, timeout=5).status_code == 200
        loopback.post(r.url + "/v1/predict", json={"instances": [{**row, "age": 5}]}, timeout=5)  # a 4xx too
    return [r.url for r in replicas]


@pytest.fixture
def bucket(stack: Stack) -> Stack:
    """The stack with `feedback/` notifications too, as cdk/feedback_arrival.py and app/local/stack.py wire it."""
    got = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    arn = got["Attributes"]["QueueArn"]
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": p}]}}}
                                for p in ("data/", "feedback/")]})  # fmt: skip
    return stack
