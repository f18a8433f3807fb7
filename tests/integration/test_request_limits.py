"""What a client can and cannot do to a replica with raw sockets (issue 22): real `flywheel serve` processes.

- A request takes a slot of the concurrency limit only once its body has arrived, and one API key holds at most
  FLYWHEEL_MAX_INFLIGHT_PER_KEY of them: a client trickling bodies, or flooding, cannot lock others out. Requests
  that must overlap are held mid-body on purpose: a burst of requests need not overlap on a loaded machine.
- A client that goes away mid-body is counted as such (499, `client_closed`), never as a server error, and logs
  no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests import loopback
from tests.conftest import Stack
from tests.helpers import eventually, settled
from tests.integration.conftest import (
    ROOT,
    ROW,
    Replica,
    metric,
    metrics_text,
    read_responses,
    serving_version,
    stalled_post,
    train,
    wait_for,
)


def _create_key(store: Path, name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flywheel.cli", "apikey", "create", "--name", name, "--file",
                           str(store)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


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
    sockets += [stalled_post(api.url, greedy) for _ in range(40)]

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

    # one key's big requests, four of them held mid-body on purpose (a burst need not overlap on a loaded machine):
    # its fifth gets 429 naming its share, another key's big request is answered, and the four are answered in full
    # once their bodies arrive
    big = orjson.dumps({"instances": [{**ROW, "income": 1000.0 + i} for i in range(10_000)]})
    eventually(lambda: metric(api.url, "flywheel_http_requests_in_flight"), lambda n: n == 0, 30,
               what="every stalled body of the first part gone")  # fmt: skip
    held = [stalled_post(api.url, greedy, declared=len(big), sent=big[: len(big) // 2], timeout=120) for _ in range(4)]
    sockets += held
    eventually(lambda: metric(api.url, "flywheel_http_requests_in_flight"), lambda n: n == 4, 30,
               what="the four held requests in flight")  # fmt: skip

    def send(key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return loopback.post(api.url + "/v1/predict", content=big, timeout=120, headers=headers)

    fifth = send(greedy)
    assert fifth.status_code == 429 and "FLYWHEEL_MAX_INFLIGHT_PER_KEY" in fifth.text, fifth.text
    assert '"limit":4' in fifth.text, fifth.text
    answered = send(other)
    assert answered.status_code == 200 and len(answered.json()["predictions"]) == 10_000
    for sock in held:
        sock.sendall(big[len(big) // 2 :])
    for sock in held:
        [(status, _, answer)], _ = read_responses(sock)
        assert status == 200 and len(orjson.loads(answer)["predictions"]) == 10_000, answer[:300]
    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="key_overloaded"),
               lambda n: n - refused_before == 1, 10, what="one more refused")  # fmt: skip
    assert metric(api.url, "flywheel_http_requests_rejected_total", reason="overloaded") == 0


def test_a_client_leaving_mid_body_is_a_client_abort_not_a_server_error(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    for _ in range(20):
        stalled_post(api.url, None, declared=1000, sent=b'{"instances": [').close()

    eventually(lambda: metric(api.url, "flywheel_http_requests_rejected_total", reason="client_closed"),
               lambda n: n == 20, 60, what="20 client aborts counted")  # fmt: skip
    text = metrics_text(api.url)
    assert 'route="/v1/predict",status="499"' in text
    assert 'status="500"' not in text
    log = api.output()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-2000:]
    assert loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, timeout=10).status_code == 200
