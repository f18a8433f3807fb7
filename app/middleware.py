"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request metrics by route template and model; load
shedding and API-key checks."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flywheel.access.api_keys import Authenticator
from flywheel.serving.metrics import ServingMetrics

# the handler puts the served model a request addressed here; "" when it addressed none (or an unknown one)
MODEL_SCOPE_KEY = "flywheel.model"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            model = scope.get(MODEL_SCOPE_KEY, "")
            self.metrics.request_duration.labels(template, str(status), model).observe(time.perf_counter() - started)


#: What the request's credential may see (`flywheel.access.api_keys.KeyRecord`), set by GuardMiddleware; None: auth off.
PRINCIPAL_SCOPE_KEY = "flywheel.principal"
#: Health probes answer without a key and are never shed (the kubelet must see a busy replica as alive).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`, from a request's headers."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return None


class GuardMiddleware:
    """Checks the API key (401) before any other work. The concurrency limit is taken later, once the request's
    body has arrived (app/service.py, Slots): a client trickling bodies must not hold the replica's slots."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, auth: Authenticator | None) -> None:
        self.app, self.metrics, self.auth = app, metrics, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.auth is None:
            await self.app(scope, receive, send)
            return
        record = self.auth.check(presented_key(scope["headers"]))
        if record is None:
            await refuse_unauthenticated(self.metrics, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = record
        await self.app(scope, receive, send)


UNAUTHENTICATED = orjson.dumps({"error": "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"})


async def refuse_unauthenticated(metrics: ServingMetrics, send: Send) -> None:
    """401, counted: no valid API key (here and in app/predict_lane.py)."""
    metrics.rejected.labels(reason="unauthenticated").inc()
    await respond_json(send, 401, UNAUTHENTICATED, ((b"www-authenticate", b'Bearer realm="flywheel"'),))


async def respond_json(send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A whole JSON response: its head, then its body."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
