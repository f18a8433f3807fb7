"""`flywheel serve`: one API replica under uvicorn (the command the container runs)."""

from __future__ import annotations

import gc
import logging
import os


def pin_threads(threads: int) -> None:
    """One numeric thread per process by default: with OpenMP threads per request, two cores
    oversubscribe and throughput collapses (measured 1,600 -> 2 req/s). Must run before numpy loads."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


#: Collect young objects after 50,000 net allocations instead of 700, the older generations rarely: every request
#: allocates thousands of short-lived objects that reference counting frees anyway, and a shadow rollout keeps
#: samples alive long enough to be promoted, so the default thresholds ran full collections that stalled the event
#: loop (bench/rollout.py, 2 processes, c=64: shadow p99 60-145 ms with the defaults, 28-46 ms with these).
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def run(host: str, port: int, workers: int, log_level: str = "info") -> int:
    from flywheel.settings import ServeSettings

    os.environ.setdefault("FLYWHEEL_METRICS_HOST", host)  # metrics on the same interface as the API, by default
    settings = ServeSettings()  # type: ignore[call-arg]  # fail fast on bad settings, before forking
    pin_threads(settings.predict_threads)
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "app.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=20,  # matches terminationGracePeriodSeconds minus the preStop pause
        loop="uvloop",
        http="app.http_limits:BoundedHttpToolsProtocol",  # httptools, with the request head bounded in size and time
    )
    return 0
