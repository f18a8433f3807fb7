"""What one API replica holds (app/api.py): settings, metrics, the fleet of served models, the capturer and the
API-key authenticator; and how it reads a request body (bounded in size and time)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.requests import Request

from flywheel.access import api_keys
from flywheel.errors import InvalidInput, PayloadTooLarge, RequestTimeout
from flywheel.serving.capture import Capturer
from flywheel.serving.fleet import Fleet
from flywheel.serving.metrics import ServingMetrics
from flywheel.settings import ServeSettings


class Service:
    """Everything one replica holds; built in the factory, started in the lifespan."""

    def __init__(self, settings: ServeSettings, s3: Any, registry: CollectorRegistry | None) -> None:
        self.settings = settings
        self.prom = registry if registry is not None else REGISTRY
        self.metrics = ServingMetrics(registry)
        self.fleet = Fleet(settings, s3, self.metrics)
        self.capture = Capturer.from_settings(s3, settings, self.fleet.pod, self.metrics)
        self.auth = (
            api_keys.authenticator(
                settings.api_keys_file,
                settings.api_keys_secret_id,
                settings.api_service_key_secret_ids,
                settings.api_keys_refresh_seconds,
            )
            if settings.api_auth == "api-keys"
            else None
        )

    def refresh_drift(self) -> None:
        """Bring the drift gauges up to date (before each scrape)."""
        for m in list(self.fleet.models.values()):
            m.monitor.refresh(m.host.current)

    async def body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}", limit=limit)
        chunks, size = [], 0
        try:  # a client trickling its body must not hold a slot of the concurrency limit for long
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
                    chunks.append(chunk)
        except TimeoutError as e:
            wait = self.settings.body_timeout_seconds
            raise RequestTimeout(f"the request body did not arrive within {wait:g} s", field="body") from e
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"malformed JSON: {e}", field="body") from e
