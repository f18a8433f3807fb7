"""Shared fixtures: fake AWS credentials, moto's real server on loopback, a bucket wired to a queue."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests import loopback

REGION = "us-east-1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """How `make test` spreads the suite over pytest-xdist's workers (`--dist load`): test by test (but for the
    group below), in this order. The tests marked `slow` or `e2e` (about a minute or more) come first, so that no
    worker is left alone with a long one at the end."""

    def long(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(m) for m in ("slow", "e2e"))

    items.sort(key=lambda item: 0 if long(item) else 1)  # stable: the rest keeps its order


ONE_WORKER = ("tests/cdk/",)  # tests whose session fixtures are worth building once: a jsii runtime and the synths


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist (-p no:xdist) nothing is scheduled
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist load`, except that the tests under ONE_WORKER all run on one worker: spread test by test, each worker
    started aws-cdk-lib's jsii runtime and synthesized the session's stacks again (~50 s of CPU more on 2 cores).
    xdist's own `loadgroup` cannot do it with pytest 9.2, which no longer reads the node id xdist rewrites.

    xdist's scope scheduler (`loadgroup` and `loadscope` use it too) sends the largest unit first, so the CDK group
    starts before the slow tests; if a worker crashes, the rest of its unit runs again on another worker."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LoadWithGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((prefix for prefix in ONE_WORKER if nodeid.startswith(prefix)), nodeid)

    return LoadWithGroups(config, log)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free port on loopback, never one this process was given before: the kernel may hand the same free port
    to two binds in a row, and a replica's API and metrics ports are taken one after the other."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def free_port_range(n: int) -> int:
    """The first of `n` consecutive free ports (`flywheel up` puts replica i on port + i). Taken below Linux's
    ephemeral range (32768+), where free_port() and outgoing connections of other xdist workers never land."""
    rng = random.Random()
    while True:
        base = rng.randrange(20000, 32000 - n)
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + n):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


@pytest.fixture(scope="session", autouse=True)
def _aws_env() -> Iterator[None]:
    """Fake credentials so nothing can reach real AWS; Powertools quiet and local."""
    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "flywheel-trainer",
        "POWERTOOLS_METRICS_NAMESPACE": "Flywheel",
        # tests run beside other processes: OpenMP over every core under contention is ~40x slower
        "FLYWHEEL_TRAIN_THREADS": "1",
    }.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "FLYWHEEL_BUCKET", "FLYWHEEL_SCHEMA", "FLYWHEEL_MODEL_NAME"):
        mp.delenv(k, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def moto_endpoint(_aws_env: None) -> Iterator[str]:
    """moto's server (S3 + SQS, real HTTP) on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    yield endpoint
    mp.undo()
    server.stop()


@dataclass
class Stack:
    """A versioned bucket whose data/ notifications go to a queue, as the cloud stack wires it."""

    s3: Any
    sqs: Any
    bucket: str
    queue_url: str

    def env(self) -> dict[str, str]:
        return {"FLYWHEEL_BUCKET": self.bucket}

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def receive(self, wait: int = 2) -> list[dict[str, Any]]:
        """All messages currently on the queue (S3 notifications), as the Lambda's SQS event records."""
        records: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait if not records else 0
            )
            msgs = got.get("Messages", [])
            if not msgs:
                return records
            for m in msgs:
                records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                "body": m["Body"], "eventSource": "aws:sqs"})  # fmt: skip
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def get_json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())


@pytest.fixture
def stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A fresh bucket + queue per test, created with real boto3 calls against moto's server."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name=REGION)
    name = f"flywheel-test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "data/"}]}},
                }
            ]
        },
    )
    monkeypatch.setenv("FLYWHEEL_BUCKET", name)
    return Stack(s3=s3, sqs=sqs, bucket=name, queue_url=url)


class MlflowServer:
    """A real `mlflow server` (SQLite backend, artifacts served from a folder) on a loopback port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # no job runner (7 more processes for GenAI features): answers in ~6 s instead of ~18 s on 2 cores
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if loopback.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("mlflow server did not answer /health in 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server + model registry per test worker; tests keep apart by names."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()
