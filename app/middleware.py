"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request metrics by route template and model."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
