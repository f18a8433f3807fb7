"""The prediction API: /v1 (records), Open Inference Protocol V2, health, readiness, metrics.

Every response that involves a model names the version that produced it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.middleware import MetricsMiddleware
from flywheel.errors import FlywheelError, InvalidInput, NotFound, NotReady, PayloadTooLarge
from flywheel.registry import Registry
from flywheel.serving.batcher import Batcher
from flywheel.serving.host import ModelHost, ServedModel
from flywheel.serving.inputs import Columns, records_to_columns, v2_to_columns
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.monitor import DriftMonitor
from flywheel.settings import ServeSettings
from flywheel.storage import s3_client

log = logging.getLogger(__name__)


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class Service:
    """Everything one replica holds; built in the factory, started in the lifespan."""

    def __init__(self, settings: ServeSettings, s3: Any, registry: CollectorRegistry | None) -> None:
        self.settings = settings
        self.prom = registry if registry is not None else REGISTRY
        self.metrics = ServingMetrics(registry)
        self.registry = Registry(s3, settings.bucket, settings.model_name, settings.models_prefix)
        self.host = ModelHost(
            self.registry,
            self.metrics,
            poll_interval=settings.poll_interval_seconds,
            pinned_version=settings.pinned_version,
        )
        self.monitor = DriftMonitor(self.metrics, settings.drift_window)
        self.batcher = Batcher(
            lambda: self.host.current,
            self._on_batch,
            max_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
        )

    def _on_batch(self, served: ServedModel, columns: Columns, predictions: list[Any]) -> None:
        self.metrics.batch_size.observe(len(predictions))
        self.metrics.predictions.labels(version=str(served.version)).inc(len(predictions))
        self.monitor.record(served, columns, predictions)

    def served(self) -> ServedModel:
        served = self.host.current
        if served is None:
            raise NotReady("no model loaded yet")
        return served

    async def body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}", limit=limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"malformed JSON: {e}", field="body") from e

    async def predict(self, columns: Columns) -> Any:
        rows = len(next(iter(columns.values())))
        return await self.batcher.submit(columns, rows)


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def v1_predict(request: Request) -> Response:
    svc = _svc(request)
    with svc.batcher.request():
        body = await svc.body(request)
        served = svc.served()
        if not isinstance(body, dict) or "instances" not in body:
            raise InvalidInput("body must be an object with 'instances'", field="instances")
        columns = records_to_columns(served.schema, body["instances"], svc.settings.max_instances)
        result = await svc.predict(columns)
    out: dict[str, Any] = {"model": result.name, "model_version": result.version, "predictions": result.predictions}
    if result.probabilities is not None:
        out["probabilities"] = result.probabilities
    return ORJSONResponse(out)


async def v1_model(request: Request) -> Response:
    served = _svc(request).served()
    return ORJSONResponse(
        {
            "model": served.name,
            "version": served.version,
            "loaded_at": served.loaded_at,
            "source": served.source,
            "manifest": served.manifest,
        }
    )


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    served = _svc(request).host.current
    if served is None:
        return ORJSONResponse({"ready": False, "reason": "no model loaded yet"}, status_code=503)
    return ORJSONResponse({"ready": True, "model": served.name, "model_version": served.version})


async def metrics(request: Request) -> Response:
    svc = _svc(request)
    svc.monitor.refresh(svc.host.current)
    return Response(generate_latest(svc.prom), media_type=CONTENT_TYPE_LATEST)


# -- Open Inference Protocol V2 -------------------------------------------------------------------
def _v2_model(request: Request) -> ServedModel:
    served = _svc(request).served()
    name = request.path_params["name"]
    if name != served.name:
        raise NotFound(f"unknown model {name!r}; this server serves {served.name!r}")
    version = request.path_params.get("version")
    if version is not None and version != str(served.version):
        raise NotFound(f"version {version} is not loaded; v{served.version} is", version=version)
    return served


_V2_DTYPE = {"numeric": "FP64", "categorical": "BYTES"}


async def v2_live(request: Request) -> Response:
    return ORJSONResponse({"live": True})


async def v2_ready(request: Request) -> Response:
    ready = _svc(request).host.ready
    return ORJSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def v2_model_ready(request: Request) -> Response:
    _v2_model(request)
    return ORJSONResponse({"name": request.path_params["name"], "ready": True})


async def v2_metadata(request: Request) -> Response:
    served = _v2_model(request)
    outputs = [{"name": "predictions", "datatype": "BYTES" if served.classes else "FP64", "shape": [-1]}]
    if served.classes:
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.classes)]})
    return ORJSONResponse(
        {
            "name": served.name,
            "versions": [str(served.version)],
            "platform": "sklearn",
            "inputs": [{"name": f.name, "datatype": _V2_DTYPE[f.type], "shape": [-1]} for f in served.schema.features],
            "outputs": outputs,
        }
    )


async def v2_infer(request: Request) -> Response:
    svc = _svc(request)
    with svc.batcher.request():
        served = _v2_model(request)
        body = await svc.body(request)
        columns = v2_to_columns(served.schema, body, svc.settings.max_instances)
        result = await svc.predict(columns)
    n = len(result.predictions)
    outputs: list[dict[str, Any]] = [
        {
            "name": "predictions",
            "shape": [n],
            "datatype": "BYTES" if served.classes else "FP64",
            "data": result.predictions,
        }
    ]
    if result.probabilities is not None:
        flat = [p[c] for p in result.probabilities for c in served.classes]
        outputs.append({"name": "probabilities", "shape": [n, len(served.classes)], "datatype": "FP64", "data": flat})
    out: dict[str, Any] = {"model_name": result.name, "model_version": str(result.version), "outputs": outputs}
    if isinstance(body, dict) and "id" in body:
        out["id"] = body["id"]
    return ORJSONResponse(out)


async def _flywheel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlywheelError)
    return ORJSONResponse(exc.to_dict(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ORJSONResponse({"error": exc.detail}, status_code=exc.status_code)


ROUTES = [
    Route("/v1/predict", v1_predict, methods=["POST"]),
    Route("/v1/model", v1_model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v2/health/live", v2_live, methods=["GET"]),
    Route("/v2/health/ready", v2_ready, methods=["GET"]),
    Route("/v2/models/{name}", v2_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}", v2_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
]


def create_app(settings: ServeSettings | None = None, *, s3: Any = None, registry: Any = "default") -> Starlette:
    """Build one replica. `registry=None` uses a private Prometheus registry (tests); default: the global one."""
    settings = settings or ServeSettings()  # type: ignore[call-arg]  # bucket from the environment
    disable_created_metrics()  # the *_created series only add noise to every scrape
    prom = None if registry == "default" else (registry or CollectorRegistry())
    service = Service(settings, s3 if s3 is not None else s3_client(), prom)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.host.start()
        service.batcher.start()
        log.info("serving %s from s3://%s (pinned=%s)", settings.model_name, settings.bucket, settings.pinned_version)
        try:
            yield
        finally:
            await service.batcher.stop()
            service.host.stop()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={FlywheelError: _flywheel_error, HTTPException: _http_error},
    )
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app
