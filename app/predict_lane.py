"""The prediction routes, answered ahead of Starlette's layers: /v1/predict, /v1/models/<name>/predict and the V2
infer paths (docs/serving.md, "The prediction routes").

A request worker spends its time on these. Starlette's layers around each of them (its error and exception
middlewares, a router trying each route's pattern, the Request object, a response class, a send wrapper per layer)
were a fifth of a worker's CPU per 1-row request (py-spy). `PredictLane` is the ASGI application uvicorn runs
(app/api.py `create_app`), in front of Starlette's: it answers these paths itself, with the same checks in the
same order as before (API key 401, a method other than POST 405, the body bounded in size and time 413/408/499,
the concurrency slots 429, the model 404/503, the instances 422) and the same metrics (requests in flight;
duration by route template, status and model). Every other path goes on to Starlette.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.middleware import UNAUTHENTICATED, presented_key, respond_json
from app.service import Service
from flywheel.access.api_keys import KeyRecord
from flywheel.errors import FlywheelError, InvalidInput
from flywheel.serving import v2
from flywheel.serving.capture import prediction_ids
from flywheel.serving.fleet import Hosted
from flywheel.serving.inputs import Columns, records_to_columns, v2_to_columns
from flywheel.serving.metrics import QuickHistogram, series_value
from flywheel.serving.served import ServedModel

log = logging.getLogger(__name__)

V1_DEFAULT, V1_NAMED = "/v1/predict", "/v1/models/{name}/predict"
V2_INFER, V2_VERSIONED = "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"
#: the route templates this lane answers (the `route` label of their metrics)
TEMPLATES = (V1_DEFAULT, V1_NAMED, V2_INFER, V2_VERSIONED)
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def match(path: str) -> tuple[str, str | None, str | None] | None:
    """(route template, model name, version) of a prediction path, as Starlette's `{name}` (one non-empty path
    segment) would match it; None for any other path."""
    if path == V1_DEFAULT:
        return V1_DEFAULT, None, None
    parts = path.split("/")
    if len(parts) == 5 and parts[0] == "" and parts[2] == "models" and parts[3]:
        if parts[1] == "v1" and parts[4] == "predict":
            return V1_NAMED, parts[3], None
        if parts[1] == "v2" and parts[4] == "infer":
            return V2_INFER, parts[3], None
    if (len(parts) == 7 and parts[0] == "" and parts[1] == "v2" and parts[2] == "models" and parts[3]
            and parts[4] == "versions" and parts[5] and parts[6] == "infer"):  # fmt: skip
        return V2_VERSIONED, parts[3], parts[5]
    return None


Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]  # status, JSON body, headers beyond the content's
_UNAUTHENTICATED: Answer = (401, UNAUTHENTICATED, ((b"www-authenticate", b'Bearer realm="flywheel"'),))


class PredictLane:
    """ASGI application: the prediction paths answered here, everything else (the lifespan too) passed on to `app`.
    `handle` is the answer itself, whoever read the request: this ASGI callable, or app/predict_protocol.py
    straight from the HTTP parser when the whole request arrived in one read."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.svc = app, service
        #: each (route, status, model)'s duration series, looked up once: `labels()` costs a lock and a conversion
        #: per call (bounded: four routes, a few statuses, the served models)
        self.durations: dict[tuple[str, int, str], QuickHistogram] = {}
        self.in_flight = series_value(service.metrics.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        found = match(path) if path else None
        if found is None:
            # a prediction path with a slash too many: redirected as Starlette's router did, after the key check
            # that ran before the router (GuardMiddleware answers a request without a valid key: 401, counted)
            auth = self.svc.auth
            if (path.endswith("/") and match(path[:-1]) is not None
                    and (auth is None or auth.check(presented_key(scope["headers"])) is not None)):  # fmt: skip
                await _redirect(send, scope, path[:-1])
                return
            await self.app(scope, receive, send)
            return

        async def body() -> bytes:
            return await self.svc.receive_body(scope, receive)

        status, content, headers = await self.handle(found, scope["method"], scope["headers"], body)
        await respond_json(send, status, content, headers)

    async def handle(
        self, found: tuple[str, str | None, str | None], method: str, headers: Headers,
        body: bytes | Callable[[], Awaitable[bytes]],
    ) -> Answer:  # fmt: skip
        """The answer to a request on a prediction path (`found`: `match`'s): `body` is the whole body, or reads it
        (bounded in size and time, holding a slot of the bodies being received). Never raises an Exception.
        From app/predict_protocol.py it runs outside any task until it first waits: nothing before that point may
        need `asyncio.current_task()` (`asyncio.timeout` does; the body's, the only one, is on the ASGI path)."""
        svc = self.svc
        principal: KeyRecord | None = None
        if svc.auth is not None:  # before any other work, as GuardMiddleware does for the other routes
            principal = svc.auth.check(presented_key(headers))
            if principal is None:
                svc.metrics.rejected.labels(reason="unauthenticated").inc()
                return _UNAUTHENTICATED
        template, name, version = found
        metrics = svc.metrics
        started = time.perf_counter()
        self.in_flight.inc(1)
        status, model = 500, ""
        try:
            try:
                if method != "POST":
                    status = 405
                    return status, orjson.dumps({"error": "Method Not Allowed"}), ((b"allow", b"POST"),)
                hosted = svc.fleet.get(name or svc.fleet.default)
                model = hosted.name  # a served model's name only: the label stays bounded
                with svc.slots.receiving(principal):  # bodies in flight are bounded too (one that arrived whole too)
                    if not isinstance(body, bytes):
                        body = await body()  # the whole body first: no slot is held while it trickles in
                out = await self._answer(svc.parse_body(body), hosted, principal, template, version)
                status = 200
                return status, orjson.dumps(out, option=_OPTIONS), ()
            except FlywheelError as e:
                status = e.status
                return status, orjson.dumps(e.to_dict()), ((b"retry-after", b"1"),) if status == 429 else ()
            except Exception:
                log.exception("%s %s failed", method, template)
                status = 500
                return status, orjson.dumps({"error": "internal server error"}), ()
        finally:
            self.in_flight.inc(-1)
            series = self.durations.get((template, status, model))
            if series is None:
                series = self.durations[(template, status, model)] = QuickHistogram(
                    metrics.request_duration.labels(template, str(status), model)
                )
            series.observe(time.perf_counter() - started)

    async def _answer(self, body: Any, hosted: Hosted, principal: KeyRecord | None, template: str,
                      version: str | None) -> dict[str, Any]:  # fmt: skip
        svc = self.svc
        client = None if principal is None else str(principal.id)  # a canary keeps each key on one version
        with svc.slots.hold(principal), hosted.batcher.request():
            served = hosted.served()
            if template in (V1_DEFAULT, V1_NAMED):
                if not isinstance(body, dict) or "instances" not in body:
                    raise InvalidInput("body must be an object with 'instances'", field="instances")
                columns = records_to_columns(served.schema, body["instances"], svc.settings.max_instances)
                rows = len(next(iter(columns.values())))
                ids = prediction_ids(body.get("ids"), rows)
                result = await hosted.predict(columns, rows, client)
            else:
                v2.check_version(served, version)
                columns = v2_to_columns(served.schema, body, svc.settings.max_instances)
                rows = len(next(iter(columns.values())))
                params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
                ids = prediction_ids(params.get("ids"), rows)
                # a request that names a version gets that version (checked above): no canary answers it
                result = await hosted.predict(columns, rows, client, canary=version is None)
        _capture(svc, hosted, served, ids, columns, result, client)
        if template in (V1_DEFAULT, V1_NAMED):
            out: dict[str, Any] = {"model": result.name, "model_version": result.version,
                                   "predictions": result.predictions, "ids": ids}  # fmt: skip
            if result.probabilities is not None:
                out["probabilities"] = result.probabilities
            return out
        answer = v2.response(result, body)
        answer["parameters"] = {"ids": ids}
        return answer


async def _redirect(send: Send, scope: Scope, path: str) -> None:
    """307 (the method and body kept) to `path`, the query string kept: the Location is relative, this host's."""
    query = scope.get("query_string", b"")
    location = urllib.parse.quote(path).encode() + (b"?" + query if query else b"")  # (a decoded %0D%0A re-encoded)
    body = orjson.dumps({"error": "Temporary Redirect", "location": location.decode("latin-1")})
    await respond_json(send, 307, body, ((b"location", location),))


def _capture(
    svc: Service, hosted: Hosted, served: ServedModel, ids: list[str], columns: Columns, result: Any, key_id: str | None
) -> None:
    """Keep the answered request for the capture files, with the id of the API key that made it: ids are scoped to
    it (docs/captures.md, "Ids and keys")."""
    svc.capture.record(hosted.name, served.schema, served.classes, ids, result.version, hosted.role_of(result.version),
                       columns, result.predictions, result.probabilities, key_id)  # fmt: skip
