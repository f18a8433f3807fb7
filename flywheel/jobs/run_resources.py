"""What a run used and where it ran: recorded in the manifest, read back to plan the next run."""

from __future__ import annotations

import os
import resource
import sys
from typing import Any


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def runs_on() -> str:
    if os.environ.get("FLYWHEEL_RUNS_ON"):
        return os.environ["FLYWHEEL_RUNS_ON"]
    return "lambda" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "local"


def resources() -> dict[str, Any]:
    return {"peak_rss_bytes": peak_rss_bytes(), "cpus": os.cpu_count() or 1, "runs_on": runs_on()}
