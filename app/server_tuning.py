"""How every API process runs: numeric threads, the garbage collector and uvicorn's options (`flywheel serve`:
app/serve.py; its request workers: app/worker.py; `--in-process`: app/api.py)."""

from __future__ import annotations

import gc
import os
from typing import Any


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

#: how every API process runs uvicorn (`--in-process`, or each request worker: app/worker.py)
UVICORN_OPTIONS: dict[str, Any] = {
    "access_log": False,
    "proxy_headers": False,  # no client address is used: X-Forwarded-* are not parsed on every request
    "timeout_graceful_shutdown": 20,  # matches terminationGracePeriodSeconds minus the preStop pause
    "loop": "uvloop",
    # httptools, the request head bounded in size and time, a prediction that arrived whole answered from the parser
    "http": "app.predict_protocol:PredictHttpProtocol",
}


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
