"""Request heads are bounded in size and time on every listener (issue 22, row 2), with real processes and raw
sockets: the API (app/http_limits.py), its metrics port (http.server) and the UI (Streamlit on the same protocol).

Without a key, a client sending an endless head gets 431 and is closed, a client sending nothing gets 408 and is
closed, and the replica's memory stays put while keyed clients are served.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import eventually
from tests.integration.conftest import ROOT, ROW, Replica, serving_version, train, wait_for

LIMITS = {"FLYWHEEL_MAX_HEADER_BYTES": "16384", "FLYWHEEL_MAX_HEADERS": "50", "FLYWHEEL_HEADER_TIMEOUT_SECONDS": "2"}


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def _endless_head(url: str, megabytes: int) -> bytes:
    """A head that never ends (one huge header), until the server stops reading; then its answer."""
    sock = _connect(url)
    line = b"X-Filler: " + b"a" * 65536
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        for _ in range(megabytes * 16):
            sock.sendall(line)
    except OSError:  # the server answered and closed: the rest is refused
        pass
    try:
        return _answer(sock)
    except ConnectionResetError:
        return b"(reset)"
    finally:
        sock.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_api_bounds_request_heads_in_size_and_time(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], tmp_path: Path
) -> None:
    train(stack)
    store = tmp_path / "api-keys.json"
    cli = [sys.executable, "-m", "flywheel.cli", "apikey", "create", "--name", "client", "--file", str(store)]
    created = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    key = created.stdout.strip().splitlines()[-1]
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_API_AUTH="api-keys", FLYWHEEL_API_KEYS_FILE=str(store),
                        **LIMITS)  # fmt: skip
    wait_for(lambda: serving_version(api.url, key) == 1, 60, what="v1")
    keyed = {"Authorization": f"Bearer {key}"}
    assert loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, headers=keyed).status_code == 200
    # the limit is on the head only: bodies far larger than it, arriving with the head in one read or after it
    for rows in (300, 3000):
        big = loopback.post(api.url + "/v1/predict", json={"instances": [ROW] * rows}, headers=keyed, timeout=60)
        assert big.status_code == 200 and len(big.json()["predictions"]) == rows, big.text[:200]
    before = _rss_bytes(api.proc.pid)

    # three clients without a key, each sending 32 MB of a head that never ends, while a keyed client predicts
    answers: list[bytes] = []
    floods = [threading.Thread(target=lambda: answers.append(_endless_head(api.url, 32))) for _ in range(3)]
    for t in floods:
        t.start()
    served = [loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, headers=keyed).status_code
              for _ in range(20)]  # fmt: skip
    for t in floods:
        t.join()
    assert served == [200] * 20
    assert len(answers) == 3 and all(a.startswith(b"HTTP/1.1 431 ") or a == b"(reset)" for a in answers), answers
    assert any(b"request head over 16384 bytes" in a for a in answers), answers
    grown = _rss_bytes(api.proc.pid) - before
    assert grown < 32 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MiB under the flood"

    # too many headers: 431 before anything of the request runs
    sock = _connect(api.url)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n")
    many = _answer(sock)
    assert many.startswith(b"HTTP/1.1 431 ") and b"over 50 request headers" in many, many

    # a connection that sends nothing, and one whose head stops half-way, are answered 408 and closed
    for start in (b"", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"):
        sock = _connect(api.url)
        sock.sendall(start)
        started = time.monotonic()
        late = _answer(sock)
        assert late.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 20, late
    # thousands of tiny requests pipelined in one read: a few are answered, then the connection is closed
    sock = _connect(api.url)
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n" * 5000)
    try:
        piped = _answer(sock)
    except ConnectionResetError:
        piped = b""
    assert piped.count(b"HTTP/1.1 200 ") <= 10, piped.count(b"HTTP/1.1 200 ")
    # one request answered, then a stray CRLF (which starts no request) and silence: still closed in time
    sock = _connect(api.url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first
    sock.sendall(b"\r\n")
    started = time.monotonic()
    _answer(sock)
    assert time.monotonic() - started < 20
    assert loopback.post(api.url + "/v1/predict", json={"instances": [ROW]}, headers=keyed).status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_uvicorns_timeout_and_a_busy_one_is_kept(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    # the head's clock (408) far beyond the keep-alive timeout (uvicorn's default, 5 s): an idle connection is closed
    # silently at the keep-alive timeout, whichever path answered its last request
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_HEADER_TIMEOUT_SECONDS="60")
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    body = b'{"instances": [%s]}' % httpx.Request("POST", "/", json=ROW).content
    head = b"POST /v1/predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    predict = head % len(body) + body

    def keep_then_idle(request: bytes) -> tuple[list[bytes], bytes, float]:
        sock = _connect(api.url)
        answers = []
        # requests 1.5 s apart for 6 s: each one ends the idling before it, so the connection stays open
        for i in range(5):
            if i:
                time.sleep(1.5)
            sock.sendall(request)
            answers.append(sock.recv(65536))
        started = time.monotonic()
        rest = _answer(sock)  # then idle: closed, with nothing said
        sock.close()
        return answers, rest, time.monotonic() - started

    # both paths at once: the parser's (a prediction) and uvicorn's ASGI path (/healthz)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(keep_then_idle, (predict, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")))
    for answers, rest, idled in results:
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers), answers
        assert rest == b"" and 4 < idled < 40, (rest, idled)


def test_the_metrics_port_closes_a_connection_that_sends_nothing(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, **LIMITS)
    sock = _connect(api.metrics_url)
    started = time.monotonic()
    assert _answer(sock) == b"" and time.monotonic() - started < 20  # closed after the 2 s limit
    assert loopback.get(api.metrics_url + "/metrics", timeout=10).status_code == 200


def test_the_ui_bounds_request_heads_as_the_api_does(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "ui.log").open("wb")
    env = {**os.environ, **LIMITS, "FLYWHEEL_BUCKET": "unused", "FLYWHEEL_API_URL": "http://127.0.0.1:9",
           "FLYWHEEL_UI_AUTH": "viewer-only"}  # fmt: skip
    cmd = [sys.executable, "-m", "flywheel.cli", "ui", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        eventually(lambda: _status(url + "/_stcore/health"), lambda s: s == 200 or proc.poll() is not None, 120,
                   what="the UI healthy")  # fmt: skip
        assert proc.poll() is None, (tmp_path / "ui.log").read_text()
        flood = _endless_head(url, 4)
        assert flood.startswith(b"HTTP/1.1 431 ") or flood == b"(reset)", flood[:200]
        sock = _connect(url)
        assert _answer(sock).startswith(b"HTTP/1.1 408 ")
        assert _status(url + "/_stcore/health") == 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def _status(url: str) -> int:
    try:
        return loopback.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0
