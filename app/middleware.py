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


def _presented_key(scope: Scope) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return None


class GuardMiddleware:
    """Sheds load (429 beyond `max_inflight` requests) and checks the API key (401), before any other work."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, max_inflight: int, auth: Authenticator | None) -> None:
        self.app, self.metrics, self.max_inflight, self.auth = app, metrics, max_inflight, auth
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.metrics.rejected.labels(reason="overloaded").inc()
            message = f"over {self.max_inflight} requests in flight on this replica; retry shortly"
            await _refuse(send, 429, message, [(b"retry-after", b"1")])
            return
        if self.auth is not None:
            record = self.auth.check(_presented_key(scope))
            if record is None:
                self.metrics.rejected.labels(reason="unauthenticated").inc()
                message = "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"
                await _refuse(send, 401, message, [(b"www-authenticate", b'Bearer realm="flywheel"')])
                return
            scope[PRINCIPAL_SCOPE_KEY] = record
        self.inflight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


async def _refuse(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
