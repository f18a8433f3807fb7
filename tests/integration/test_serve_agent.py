"""`flywheel serve` as an agent and its request workers (docs/serving.md, "One process serves, one works"): the
workers answer, the agent does the rest; a worker that dies is replaced, and every worker's counts reach /metrics."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Stack
from tests.integration.conftest import ROW, Replica, metric, predict, serving_version, train, wait_for


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def zygotes(replica: Replica) -> list[int]:
    """The replica's worker zygote (app/worker_zygote.py), the agent's child that forks the workers: [] or one."""
    return [pid for pid in children(replica.proc.pid) if _comm(pid) == "flywheel-zygote" and _state(pid) != b"Z"]


def workers(replica: Replica) -> list[int]:
    """The replica's live request workers (a worker that has just exited, or is a zombie, is not listed)."""
    return [p for z in zygotes(replica) for p in children(z) if _comm(p) == "flywheel-worker" and _state(p) != b"Z"]


def _one_other_than(gone: int, live: list[int]) -> bool:
    """One worker is alive and it is not `gone` (the list is read once: it changes under the test)."""
    return len(live) == 1 and live[0] != gone


def test_two_workers_answer_and_every_answer_is_counted(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    version = train(stack)
    api = start_replica(stack.bucket, moto_endpoint, args=("--workers", "2"), FLYWHEEL_CAPTURE_FLUSH_SECONDS="1")
    wait_for(lambda: serving_version(api.url) == version, 60, what="v1 served")
    assert len(workers(api)) == 2
    with httpx.Client(timeout=10) as client:
        for i in range(60):
            r = client.post(api.url + "/v1/predict", json={"instances": [{**ROW, "income": 3000.0 + i}] * 2})
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == version
    # both workers' counters, summed by the agent's /metrics (each worker writes its own multiprocess file)
    wait_for(lambda: metric(api.url, "flywheel_predictions_total", model="savings", version=str(version)) == 120,
             10, what="120 predictions counted")  # fmt: skip
    assert metric(api.url, "flywheel_model_version", model="savings") == version  # the agent's own series
    assert metric(api.url, "flywheel_http_requests_in_flight") == 0
    # the agent wrote the captures: the workers never talk to S3
    wait_for(lambda: bool(stack.keys("captures/")), 60, what="capture files")


def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    version = train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == version, 60, what="v1 served")
    for _ in range(10):
        assert predict(api.url, [ROW]).status_code == 200
    wait_for(lambda: metric(api.url, "flywheel_predictions_total", model="savings", version=str(version)) == 10, 10,
             what="10 counted")  # fmt: skip
    (first,) = workers(api)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _one_other_than(first, workers(api)), 30, what="a new worker")
    wait_for(lambda: serving_version(api.url) == version, 60, what="the new worker serves v1")
    assert predict(api.url, [ROW]).status_code == 200
    wait_for(lambda: metric(api.url, "flywheel_predictions_total", model="savings", version=str(version)) == 11, 10,
             what="the dead worker's 10 and the new one's 1")  # fmt: skip
    assert "request worker 0" in api.output() and "exited with -9" in api.output()
    # a worker stopped with SIGTERM right after answering writes its last metric changes before it exits (they are
    # otherwise written every 0.1 s)
    for _ in range(10):
        assert predict(api.url, [ROW]).status_code == 200
    (second,) = workers(api)
    os.kill(second, signal.SIGTERM)
    wait_for(lambda: _one_other_than(second, workers(api)), 30, what="a third worker")
    wait_for(lambda: metric(api.url, "flywheel_predictions_total", model="savings", version=str(version)) == 21, 10,
             what="every answer counted, those just before the SIGTERM too")  # fmt: skip


def test_workers_stop_when_the_agent_dies(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: len(workers(api)) == 1, 30, what="a worker")
    (worker,) = workers(api)
    api.proc.kill()
    api.proc.wait()
    wait_for(lambda: not Path(f"/proc/{worker}").exists() or b"Z" in _state(worker), 30, what="the worker gone")


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def test_workers_hold_no_aws_credentials(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    """A worker is forked from the agent's zygote, yet no AWS_* value is in its environment: neither in what
    /proc shows (the agent's exec-time block, copied by the fork) nor in os.environ."""
    secret = "the-agents-own-" + os.urandom(8).hex()  # moto takes any key
    api = start_replica(stack.bucket, moto_endpoint, AWS_SECRET_ACCESS_KEY=secret)
    wait_for(lambda: len(workers(api)) == 1, 30, what="a worker")
    (worker,) = workers(api)
    assert f"AWS_SECRET_ACCESS_KEY={secret}".encode() in Path(f"/proc/{api.proc.pid}/environ").read_bytes()
    wait_for(lambda: b"AWS_SECRET_ACCESS_KEY=x" in Path(f"/proc/{worker}/environ").read_bytes(), 10,
             what="the worker's copy blanked")  # fmt: skip
    assert secret.encode() not in Path(f"/proc/{worker}/environ").read_bytes()


def test_a_replica_whose_zygote_dies_stops_with_the_reason(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    """Without its zygote no worker could be started again: the replica stops (exit 1, the reason in its log) so
    that Kubernetes restarts it, and its workers go with it."""
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: len(workers(api)) == 1, 30, what="a worker")
    (worker,) = workers(api)
    (forker,) = zygotes(api)
    os.kill(forker, signal.SIGKILL)
    assert api.proc.wait(30) == 1
    assert "worker zygote" in api.output() and "this replica stops" in api.output()
    wait_for(lambda: not Path(f"/proc/{worker}").exists() or b"Z" in _state(worker), 30, what="the worker gone")
