"""`flywheel serve`: one API replica under uvicorn (the command the container runs)."""

from __future__ import annotations

import logging
import os


def pin_threads(threads: int) -> None:
    """One numeric thread per process by default: with OpenMP threads per request, two cores
    oversubscribe and throughput collapses (measured 1,600 -> 2 req/s). Must run before numpy loads."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


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
        http="httptools",
    )
    return 0
