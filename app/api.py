"""The prediction API: every served model under /v1/models/<name> and the Open Inference Protocol (V2) (the
prediction routes themselves: app/predict_lane.py);
/v1/predict and /v1/model keep serving the default model (FLYWHEEL_MODEL_NAME). Health and readiness; the
metrics on a port of their own (app/metrics_server.py). Every route but the health probes needs an API key
(app/middleware.py GuardMiddleware) unless FLYWHEEL_API_AUTH=off.

Every response that involves a model names the model and the version that produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.metrics_server import MetricsServer
from app.middleware import MODEL_SCOPE_KEY, PRINCIPAL_SCOPE_KEY, GuardMiddleware, MetricsMiddleware, presented_key
from app.predict_lane import PredictLane
from app.server_tuning import tune_gc
from app.service import Service
from flywheel.access import api_keys
from flywheel.errors import FlywheelError
from flywheel.registry.manifest import public_view
from flywheel.serving import v2
from flywheel.serving.fleet import V2_STATE, Hosted
from flywheel.serving.relayed import WorkerLink
from flywheel.settings import ServeSettings
from flywheel.storage import s3_client

log = logging.getLogger(__name__)


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def _hosted(request: Request) -> Hosted:
    """The model the path names (the default model on /v1/predict and /v1/model); labels the request's metrics."""
    svc = _svc(request)
    hosted = svc.fleet.get(request.path_params.get("name", svc.fleet.default))
    request.scope[MODEL_SCOPE_KEY] = hosted.name  # a served model's name only: the label stays bounded
    return hosted


# -- /v1 (the prediction routes: app/predict_lane.py) ----------------------------------------------------
def is_operator(request: Request) -> bool:
    record = request.scope.get(PRINCIPAL_SCOPE_KEY)
    return record is not None and record.role == "operator"


async def v1_model(request: Request) -> Response:
    """What a client needs of the served version; golden rows, data keys and lineage only for operator keys."""
    hosted = _hosted(request)
    served = hosted.served()
    manifest = served.manifest if is_operator(request) else public_view(served.manifest)
    return ORJSONResponse(
        {
            "model": served.name,
            "version": served.version,
            "loaded_at": served.loaded_at,
            "source": served.source,
            "serving_path": served.serving_path,  # "fast" (verified identical to the Pipeline) or "pipeline"
            "fast_path": served.fast_path_note,
            "rollout": hosted.describe()["rollout"],  # the candidate served beside this version, if any
            "manifest": manifest,
        }
    )


async def v1_models(request: Request) -> Response:
    fleet = _svc(request).fleet
    models = [{k: d[k] for k in ("name", "version", "ready")} for d in (m.describe() for m in fleet.models.values())]
    return ORJSONResponse({"default": fleet.default, "models": models})


# -- health, readiness ------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    """Ready or not for anyone (the kubelet's probe needs no key); which models, versions and rollouts only for
    a valid key (or with keys off): a probe must not tell a stranger what this deployment serves."""
    svc = _svc(request)
    ready, body = svc.fleet.readiness()
    status = 200 if ready else 503
    if svc.auth is not None and svc.auth.check(presented_key(request.scope["headers"])) is None:
        return ORJSONResponse({"ready": ready}, status_code=status)
    default = svc.fleet.models.get(svc.fleet.default)
    if default is not None and default.host.current is not None:  # what single-model clients read
        body = {"model": default.name, "model_version": default.host.current.version, **body}
    return ORJSONResponse({"ready": ready, **body}, status_code=status)


# -- Open Inference Protocol V2 ---------------------------------------------------------------------
async def v2_live(request: Request) -> Response:
    return ORJSONResponse({"live": True})


async def v2_ready(request: Request) -> Response:
    ready, _ = _svc(request).fleet.readiness()
    return ORJSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def v2_models(request: Request) -> Response:
    """MLServer's repository index: one entry per served model."""
    entries = []
    for m in _svc(request).fleet.models.values():
        current = m.host.current
        entries.append({"name": m.name, "version": str(current.version) if current else "",
                        "state": V2_STATE[m.host.state], "reason": m.reason()})  # fmt: skip
    return ORJSONResponse(entries)


async def v2_model_ready(request: Request) -> Response:
    hosted = _hosted(request)
    current = hosted.host.current
    if current is not None:
        v2.check_version(current, request.path_params.get("version"))
    ready = current is not None
    return ORJSONResponse({"name": hosted.name, "ready": ready}, status_code=200 if ready else 503)


async def v2_metadata(request: Request) -> Response:
    served = _hosted(request).served()
    v2.check_version(served, request.path_params.get("version"))
    return ORJSONResponse(v2.metadata(served))


async def _flywheel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlywheelError)
    headers = {"retry-after": "1"} if exc.status == 429 else None
    return ORJSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ORJSONResponse({"error": exc.detail}, status_code=exc.status_code)


ROUTES = [  # and the prediction routes, answered before these: app/predict_lane.py
    Route("/v1/model", v1_model, methods=["GET"]),
    Route("/v1/models", v1_models, methods=["GET"]),
    Route("/v1/models/{name}", v1_model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v2/health/live", v2_live, methods=["GET"]),
    Route("/v2/health/ready", v2_ready, methods=["GET"]),
    Route("/v2/models", v2_models, methods=["GET"]),
    Route("/v2/models/{name}", v2_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", v2_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
]


def create_app(
    settings: ServeSettings | None = None, *, s3: Any = None, registry: Any = "default", link: WorkerLink | None = None
) -> PredictLane:
    """Build one replica. `registry=None` uses a private Prometheus registry (tests); default: the global one.
    `link`: a request worker of an agent (app/worker.py): no S3, no metrics port, no background work here."""
    settings = settings or ServeSettings()  # type: ignore[call-arg]  # bucket from the environment
    tune_gc()  # app/server_tuning.py: each worker process sets its own
    disable_created_metrics()  # the *_created series only add noise to every scrape
    prom = None if registry == "default" else (registry or CollectorRegistry())
    service = Service(settings, None if link is not None else s3 if s3 is not None else s3_client(), prom, link)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics_server = _metrics_server(settings, service) if link is None else None  # the agent serves them
        service.fleet.start()
        service.capture.start()
        if link is not None:  # answer nothing before what the agent serves now is applied (else: 503s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.synced.wait(), timeout=120)
        every = settings.api_keys_refresh_seconds
        refresher = asyncio.create_task(_refresh_keys(service.auth if link is None else None, every))
        log.info("serving %s from s3://%s (default %s, pinned=%s, auth %s)",
                 settings.serve_models or "every registered model", settings.bucket, settings.model_name,
                 settings.pinned_version, settings.api_auth)  # fmt: skip
        try:
            yield
        finally:
            refresher.cancel()
            await service.fleet.stop()
            if link is not None:
                await link.stop()  # the last rollout counts and reports reach the agent
            else:
                await asyncio.to_thread(service.capture.stop)  # the last captures are written
            if metrics_server is not None:
                metrics_server.stop()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={FlywheelError: _flywheel_error, HTTPException: _http_error},
    )
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    # outermost: an over-limit or unauthenticated request is refused before any other work
    app.add_middleware(GuardMiddleware, metrics=service.metrics, auth=service.auth)
    # the prediction paths before any of Starlette's layers, with their own key check, errors and metrics
    return PredictLane(app, service)


def _metrics_server(settings: ServeSettings, service: Service) -> MetricsServer | None:
    try:
        server = MetricsServer(settings.metrics_host, settings.metrics_port, service.prom, service.refresh_drift)
    except OSError as e:  # with `--workers N` the first worker holds the port: the others serve no metrics
        log.warning("metrics port %d not available (%s): this process exports no metrics", settings.metrics_port, e)
        return None
    server.start()
    return server


async def _refresh_keys(auth: api_keys.Authenticator | None, every: float) -> None:
    """Reload the API keys off the event loop every `every` seconds (revocations take effect within it)."""
    while auth is not None:
        await asyncio.sleep(every)
        await asyncio.to_thread(auth.refresh)
