"""What one API replica holds (app/api.py): settings, metrics, the fleet of served models, the capturer and the
API-key authenticator; and how it reads a request body (bounded in size and time)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Receive, Scope

from flywheel.access import api_keys
from flywheel.access.api_keys import KeyRecord
from flywheel.errors import ClientClosed, InvalidInput, Overloaded, PayloadTooLarge, RequestTimeout
from flywheel.serving.capture import Capturer
from flywheel.serving.fleet import Fleet
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.relayed import WorkerLink
from flywheel.settings import ServeSettings


class Limit:
    """At most `limit` of something at once on this replica, and at most `per_key` of them for one API key (no
    per-key share with keys off: there is one client); 429 naming the limit beyond either."""

    def __init__(self, what: str, limit: int, per_key: int, metrics: ServingMetrics) -> None:
        self.what, self.limit, self.per_key, self.metrics = what, limit, per_key, metrics
        self.now = 0
        self.by_key: dict[str, int] = {}  # a key with none held has no entry

    def take(self, principal: KeyRecord | None) -> _Held:
        """One of them for the `with` block (429 beyond the limits)."""
        key = principal.id if principal is not None else None
        if self.now >= self.limit:
            self.metrics.rejected.labels(reason="overloaded").inc()
            raise Overloaded(f"over {self.limit} {self.what} on this replica; retry shortly", limit=self.limit)
        if key is not None and self.by_key.get(key, 0) >= self.per_key:
            self.metrics.rejected.labels(reason="key_overloaded").inc()
            raise Overloaded(f"this API key has {self.per_key} {self.what} on this replica, its limit "
                             "(FLYWHEEL_MAX_INFLIGHT_PER_KEY); retry shortly", limit=self.per_key)  # fmt: skip
        return _Held(self, key)


class _Held:
    """A taken place of a `Limit`, given back when the `with` block ends (a class, not a generator: every request
    takes two)."""

    __slots__ = ("key", "limit")

    def __init__(self, limit: Limit, key: str | None) -> None:
        self.limit, self.key = limit, key

    def __enter__(self) -> None:
        limit = self.limit
        limit.now += 1  # one event loop: no lock needed
        if self.key is not None:
            limit.by_key[self.key] = limit.by_key.get(self.key, 0) + 1

    def __exit__(self, *exc: object) -> None:
        limit, key = self.limit, self.key
        limit.now -= 1
        if key is not None:
            held = limit.by_key[key] - 1
            if held:
                limit.by_key[key] = held
            else:
                del limit.by_key[key]


class Slots:
    """The replica's concurrency limit, taken by a request once its body has arrived (`hold`), and the same bound
    on bodies being received (`receiving`), apart: buffered bodies cannot pile up either."""

    def __init__(self, limit: int, per_key: int, metrics: ServingMetrics) -> None:
        self.requests = Limit("requests in flight", limit, per_key, metrics)
        self.bodies = Limit("request bodies being received", limit, per_key, metrics)

    def hold(self, principal: KeyRecord | None) -> AbstractContextManager[None]:
        return self.requests.take(principal)

    def receiving(self, principal: KeyRecord | None) -> AbstractContextManager[None]:
        return self.bodies.take(principal)


class Service:
    """Everything one replica holds; built in the factory, started in the lifespan."""

    def __init__(
        self, settings: ServeSettings, s3: Any, registry: CollectorRegistry | None, link: WorkerLink | None = None
    ) -> None:
        """`link`: a request worker's link to its agent (app/worker.py), which lists, polls, verifies, captures and
        reloads keys for it; None: this process does all of that itself (tests, `flywheel serve --in-process`)."""
        self.settings = settings
        self.prom = registry if registry is not None else REGISTRY
        self.metrics = ServingMetrics(registry)
        self.link = link
        self.fleet = Fleet(settings, s3, self.metrics, relayed=link is not None)
        self.capture: Capturer | WorkerLink = (
            link if link is not None else Capturer.from_settings(s3, settings, self.fleet.pod, self.metrics)
        )
        self.slots = Slots(settings.max_inflight, settings.max_inflight_per_key, self.metrics)
        self.auth: api_keys.Authenticator | None = None
        if settings.api_auth == "api-keys":
            self.auth = (
                api_keys.Authenticator(None, refresh_seconds=settings.api_keys_refresh_seconds)  # filled by the agent
                if link is not None
                else api_keys.authenticator(settings.api_keys_file, settings.api_keys_secret_id,
                                            settings.api_service_key_secret_ids, settings.api_keys_refresh_seconds)
            )  # fmt: skip
        if link is not None:
            link.fleet, link.auth, link.metrics = self.fleet, self.auth, self.metrics

    def refresh_drift(self) -> None:
        """Bring the drift gauges up to date (before each scrape)."""
        for m in list(self.fleet.models.values()):
            if m.monitor is not None:
                m.monitor.refresh(m.host.current)

    async def receive_body(self, scope: Scope, receive: Receive) -> bytes:
        """The request's body, read whole: bounded in size (FLYWHEEL_MAX_BODY_BYTES) and in time."""
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared.decode()} bytes; the limit is {limit}", limit=limit)
        chunks, size = [], 0
        try:  # a client trickling its body must not hold a slot of the concurrency limit for long
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.metrics.rejected.labels(reason="client_closed").inc()
                        raise ClientClosed("the client closed the connection before its body arrived", field="body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError as e:
            wait = self.settings.body_timeout_seconds
            raise RequestTimeout(f"the request body did not arrive within {wait:g} s", field="body") from e
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def parse_body(self, data: bytes) -> Any:
        """A whole request body as JSON, within FLYWHEEL_MAX_BODY_BYTES."""
        limit = self.settings.max_body_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"malformed JSON: {e}", field="body") from e


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
