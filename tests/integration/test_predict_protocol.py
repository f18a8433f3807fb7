"""Predictions answered straight from the HTTP parser (app/predict_protocol.py) keep HTTP's rules: pipelined
requests are answered in order whichever way each is answered (here, through ASGI, or in a task behind the predict
thread); a body that arrives in later reads goes through the ASGI cycle with the same answer; `Connection: close`
and HTTP/1.0 close the connection after the answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import orjson

from tests import loopback
from tests.conftest import Stack
from tests.integration.conftest import ROW, Replica, predict, read_responses, serving_version, train, wait_for

V2_INPUTS = [{"name": k, "shape": [1], "datatype": "BYTES" if k == "region" else "FP64", "data": [v]}
             for k, v in ROW.items()]  # fmt: skip


def _post(path: str, body: dict[str, Any], *, version: str = "1.1", close: bool = False) -> bytes:
    data = orjson.dumps(body)
    extra = "Connection: close\r\n" if close else ""
    return (f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data  # fmt: skip


def _read(sock: socket.socket, count: int) -> tuple[list[tuple[int, dict[str, str], bytes]], bytes]:
    sock.settimeout(60)
    return read_responses(sock, count)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    return sock.recv(1) == b""


def test_pipelined_requests_are_answered_in_order(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    big = [{**ROW, "income": 1000.0 + i} for i in range(1500)]  # over 1,024 rows: the predict thread, in a task
    requests = [
        _post("/v1/predict", {"instances": [ROW], "ids": ["first"]}),
        _post("/v1/predict", {"instances": big, "ids": [f"big-{i}" for i in range(1500)]}),
        _post("/v1/predict", {"instances": [ROW], "ids": ["after-big"]}),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        _post("/v2/models/savings/infer", {"inputs": V2_INPUTS, "parameters": {"ids": ["v2"]}}),
        _post("/v1/predict", {"instances": [{**ROW, "age": "old"}]}),
        _post("/v1/predict/", {"instances": [ROW]}),  # one slash too many: redirected (307), as Starlette did
        _post("/v1/predict", {"instances": [ROW], "ids": ["last"]}),
    ]
    with _connect(api.url) as sock:
        sock.sendall(b"".join(requests))  # one write: the server reads them together
        responses, rest = _read(sock, len(requests))
    assert rest == b""
    statuses = [status for status, _, _ in responses]
    assert statuses == [200, 200, 200, 200, 200, 422, 307, 200], responses
    assert responses[6][1]["location"] == "/v1/predict"
    bodies = [orjson.loads(body) for _, _, body in responses]
    assert bodies[0]["ids"] == ["first"] and bodies[2]["ids"] == ["after-big"] and bodies[7]["ids"] == ["last"]
    assert bodies[1]["ids"] == [f"big-{i}" for i in range(1500)] and len(bodies[1]["predictions"]) == 1500
    assert bodies[3] == {"status": "alive"} and bodies[4]["parameters"] == {"ids": ["v2"]}
    assert bodies[5]["instance"] == 0 and bodies[5]["field"] == "age"
    # the same rows give the same answers one by one
    assert bodies[0]["predictions"] == predict(api.url, [ROW]).json()["predictions"]
    assert bodies[1]["predictions"][:3] == predict(api.url, big[:3]).json()["predictions"]
    assert bodies[4]["outputs"][0]["data"] == bodies[0]["predictions"]


def test_a_body_in_later_reads_and_closing_connections(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    expected = predict(api.url, [ROW]).json()["predictions"]
    request = _post("/v1/predict", {"instances": [ROW], "ids": ["split"]})
    head, body = request.split(b"\r\n\r\n", 1)
    with _connect(api.url) as sock:
        sock.sendall(head + b"\r\n\r\n" + body[:10])  # the head and part of the body, the rest later
        time.sleep(0.3)
        sock.sendall(body[10:])
        [(status, _, answer)], _ = _read(sock, 1)
        assert status == 200 and orjson.loads(answer)["predictions"] == expected
        sock.sendall(_post("/v1/predict", {"instances": [ROW], "ids": ["same-connection"]}))  # still usable
        [(status, _, answer)], _ = _read(sock, 1)
        assert status == 200 and orjson.loads(answer)["ids"] == ["same-connection"]
    # a request of ~40 KB in one write (over the head's 32 KiB bound, within one read): one answer (the read is no
    # request head), the connection still usable
    big = [{**ROW, "income": 1000.0 + i} for i in range(250)]
    with _connect(api.url) as sock:
        sock.sendall(_post("/v1/predict", {"instances": big, "ids": [f"r{i}" for i in range(250)]}))
        [(status, _, answer)], _ = _read(sock, 1)
        assert status == 200 and len(orjson.loads(answer)["predictions"]) == 250
        sock.sendall(_post("/v1/predict", {"instances": [ROW], "ids": ["next"]}))
        [(status, _, answer)], _ = _read(sock, 1)
        assert status == 200 and orjson.loads(answer)["ids"] == ["next"], answer
    # a prediction path with one slash too many is redirected, its query kept, whichever route; a follower gets the
    # answer; any other path with a slash stays 404
    for path, target in (("/v1/models/savings/predict/?trace=1", "/v1/models/savings/predict?trace=1"),
                         ("/v2/models/savings/infer/", "/v2/models/savings/infer")):  # fmt: skip
        body = {"inputs": V2_INPUTS} if path.startswith("/v2") else {"instances": [ROW]}
        moved = loopback.post(api.url + path, json=body, timeout=10)
        assert moved.status_code == 307 and moved.headers["location"] == target, moved.text
        followed = loopback.post(api.url + path, json=body, timeout=10, follow_redirects=True)
        assert followed.status_code == 200, followed.text
    assert loopback.post(api.url + "/v1/nothing/", json={}, timeout=10).status_code == 404
    for request in (_post("/v1/predict", {"instances": [ROW]}, close=True),
                    _post("/v1/predict", {"instances": [ROW]}, version="1.0")):  # fmt: skip
        with _connect(api.url) as sock:
            sock.sendall(request)
            [(status, headers, answer)], _ = _read(sock, 1)
            assert status == 200 and orjson.loads(answer)["predictions"] == expected
            assert headers.get("connection") == "close" and _closed(sock)


def test_a_client_that_never_reads_its_answers_is_cut_off(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    """Small predictions are answered at once, from the parser: a client that sends them and never reads its answers
    must not make the replica buffer answers without end; other clients are still served."""
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answers pile up on the server, not here
    sock.connect((host, int(port)))
    sock.settimeout(30)
    request = _post("/v1/predict", {"instances": [ROW]})
    deadline, sent, cut = time.monotonic() + 60, 0, False
    with sock:
        while time.monotonic() < deadline:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                cut = True
                break
            sent += 1
    assert cut, f"{sent} requests sent without reading, and the connection is still open"
    assert predict(api.url, [ROW]).status_code == 200
