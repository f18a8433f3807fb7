"""`flywheel serve`: one API replica under uvicorn (the command the container runs)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from app.server_tuning import UVICORN_OPTIONS, pin_threads

if TYPE_CHECKING:
    from app.worker_zygote import Zygote
    from flywheel.settings import ServeSettings

log = logging.getLogger(__name__)


def run(host: str, port: int, workers: int, log_level: str = "info", *, in_process: bool = False) -> int:
    """An agent in this process and `workers` request processes (docs/serving.md, "One process serves, one
    works"); `in_process`: one process that serves and does the background work too (as before, and as tests do)."""
    from flywheel.settings import ServeSettings

    os.environ.setdefault("FLYWHEEL_METRICS_HOST", host)  # metrics on the same interface as the API, by default
    settings = ServeSettings()  # type: ignore[call-arg]  # fail fast on bad settings, before any process starts
    pin_threads(settings.predict_threads)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if in_process:
        return _run_in_process(host, port, workers, log_level)
    if workers < 1:
        raise SystemExit("flywheel serve: --workers must be at least 1")
    return _run_agent(settings, host, port, workers, log_level)


def _run_in_process(host: str, port: int, workers: int, log_level: str) -> int:
    import uvicorn

    uvicorn.run(
        "app.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **UVICORN_OPTIONS,
    )
    return 0


def _run_agent(settings: ServeSettings, host: str, port: int, workers: int, log_level: str) -> int:
    import shutil
    import signal
    import socket
    import tempfile
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # first: as PID 1, a signal that comes with no handler set is lost
        signal.signal(sig, lambda *_: stop.set())

    from prometheus_client import CollectorRegistry, disable_created_metrics

    from app.metrics_server import MetricsServer
    from app.worker_zygote import ZygoteLost
    from app.workers import WorkerPool
    from flywheel.serving.agent import Agent
    from flywheel.serving.metrics import ServingMetrics
    from flywheel.serving.worker_metrics import merged_registry
    from flywheel.storage import s3_client

    zygote = _fork_zygote()  # first: while this process has one thread and no S3 client
    disable_created_metrics()
    own = CollectorRegistry()
    agent = Agent(settings, s3_client(), ServingMetrics(own), copies=1 + workers)
    metrics_dir = tempfile.mkdtemp(prefix="flywheel-worker-metrics-")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    try:
        metrics: MetricsServer | None = MetricsServer(
            settings.metrics_host, settings.metrics_port, merged_registry(own, metrics_dir), agent.refresh_drift
        )
    except OSError as e:  # as before the agent: a replica whose metrics port is taken still serves
        log.warning("metrics port %d not available (%s): this replica exports no metrics", settings.metrics_port, e)
        metrics = None
    pool = WorkerPool(zygote, agent, listener, workers, metrics_dir, log_level)
    agent.start()
    code = 0
    try:
        pool.start()
        if metrics is not None:
            metrics.start()
        log.info("serving %s from s3://%s on %s:%d with %d request worker(s) (default %s, pinned=%s, auth %s)",
                 settings.serve_models or "every registered model", settings.bucket, host, port, workers,
                 settings.model_name, settings.pinned_version, settings.api_auth)  # fmt: skip
        while not stop.wait(0.5):
            pool.tend()
    except ZygoteLost as e:
        log.error("%s; this replica stops (and is restarted)", e)
        code = 1
    finally:
        listener.close()  # new connections are refused now, not left in a backlog no worker will accept from
        try:
            pool.stop(timeout=25)  # each worker finishes its requests in flight (uvicorn: up to 20 s)
            zygote.close()
        finally:
            agent.stop()  # the last captures are written, whatever happened above
            if metrics is not None:
                metrics.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return code


def _fork_zygote() -> Zygote:
    """The process that forks the request workers (app/worker_zygote.py), forked with what a worker imports
    already imported: each worker starts in milliseconds instead of seconds of CPU."""
    import gc
    import importlib

    from app import worker
    from app.worker_zygote import Zygote
    from flywheel.serving.fastpath.base import load_compiler

    for name in worker.PRELOAD:
        importlib.import_module(name)
    load_compiler()
    gc.collect()
    gc.freeze()  # what is imported stays out of the collector's scans: its pages stay shared with the workers
    return Zygote.start(worker.serve)
