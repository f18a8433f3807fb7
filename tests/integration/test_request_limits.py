"""What a client can and cannot do to a replica with raw sockets (issue 22): real `flywheel serve` processes.

- A request takes a slot of the concurrency limit only once its body has arrived, and one API key holds at most
  FLYWHEEL_MAX_INFLIGHT_PER_KEY of them: a client trickling bodies, or flooding, cannot lock others out.
- A client that goes away mid-body is counted as such (499, `client_closed`), never as a server error, and logs
  no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests import loopback
from tests.conftest import Stack
from tests.helpers import eventually, settled
from tests.integration.conftest import ROOT, ROW, Replica, metric, metrics_text, serving_version, train, wait_for


def _create_key(store: Path, name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flywheel.cli", "apikey", "create", "--name", name, "--file",
                           str(store)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def _partial(url: str, key: str | None, declared: int = 1000, sent: bytes = b"{") -> socket.socket:
    """A POST whose headers arrive whole and whose body stops after `sent` (of `declared` bytes)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + sent)
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_trickled_bodies_hold_no_slot_and_one_key_holds_at_most_its_share(
    stack: Stack,
    moto_endpoint: str,
    start_replica: Callable[..., Replica],
    tmp_path: Path,
    sockets: list[socket.socket],
) -> None:
    train(stack)
    store = tmp_path / "api-keys.json"
    greedy, other = _create_key(store, "greedy"), _create_key(store, "other")
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_API_AUTH="api-keys", FLYWHEEL_API_KEYS_FILE=str(store),
                        FLYWHEEL_MAX_INFLIGHT="8", FLYWHEEL_MAX_INFLIGHT_PER_KEY="4",
                        FLYWHEEL_BODY_TIMEOUT_SECONDS="60")  # fmt: skip
    wait_for(lambda: serving_version(api.url, other) == 1, 60, what="v1")
    body = {"instances": [ROW]}

    # 40 requests of one key whose bodies never finish (the replica's limit is 8): they hold connections, not
    # slots; that key's own share of bodies in flight is taken (its next request gets 429), every other key is served
    sockets += [_partial(api.url, greedy) for _ in range(40)]

    def answer(key: str) -> httpx.Response:
        return loopback.post(api.url + "/v1/predict", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    assert answer(other).status_code == 200
    own = answer(greedy)
    assert own.status_code == 429 and "FLYWHEEL_MAX_INFLIGHT_PER_KEY" in own.text, own.text
    for s in sockets:
        s.close()
    eventually(lambda: answer(greedy).status_code, lambda status: status == 200, 60,
               what="the key served again once its stalled bodies are gone")  # fmt: skip
    # the refusals so far reach /metrics up to 0.1 s late (a worker writes its counts in the background)
    refused_before = settled(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="key_overloaded"),
                             what="the refusals counted so far")  # fmt: skip

    # one key sending many big requests at once gets 429 beyond its share; another key is still answered
    big = orjson.dumps({"instances": [{**ROW, "income": 1000.0 + i} for i in range(10_000)]})
    statuses: dict[str, list[tuple[int, str]]] = {"greedy": [], "other": []}

    def send(who: str, key: str) -> None:
        r = loopback.post(api.url + "/v1/predict", content=big, timeout=120,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
        statuses[who].append((r.status_code, r.text[:300]))

    senders = [threading.Thread(target=send, args=("greedy", greedy)) for _ in range(12)]
    senders.append(threading.Thread(target=send, args=("other", other)))
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    refused = [text for status, text in statuses["greedy"] if status == 429]
    assert refused and all("FLYWHEEL_MAX_INFLIGHT_PER_KEY" in text and '"limit":4' in text for text in refused)
    assert {status for status, _ in statuses["greedy"]} == {200, 429}, statuses["greedy"]
    assert [status for status, _ in statuses["other"]] == [200]
    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="key_overloaded"),
               lambda n: n - refused_before == len(refused), 10, what=f"{len(refused)} more refused")  # fmt: skip
    assert metric(api.url, "flywheel_http_requests_rejected_total", reason="overloaded") == 0


def test_a_client_leaving_mid_body_is_a_client_abort_not_a_server_error(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    for _ in range(20):
        _partial(api.url, None, declared=1000, sent=b'{"instances": [').close()

    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="client_closed"),
               lambda n: n == 20, 60, what="20 client aborts counted")  # fmt: skip
    text = metrics_text(api.url)
    assert 'route="/v1/predict",status="499"' in text
    assert 'status="500"' not in text
    log = api.output()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-2000:]
    assert loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, timeout=10).status_code == 200
