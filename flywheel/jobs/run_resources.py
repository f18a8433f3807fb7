"""What a run used and where it ran (recorded in the manifest, read back to plan the next run), its work folder
and how long its lock may live."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from tempfile import gettempdir
from typing import Any

from flywheel.settings import TrainerSettings

WORKDIR_PREFIX = "flywheel-retrain-"
STALE_WORKDIR_SECONDS = 16 * 60  # longer than a Lambda can run


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


def remove_stale_workdirs() -> None:
    """A Lambda killed at its timeout leaves its /tmp work behind in a warm environment: remove what is older
    than any invocation can be (only on Lambda, where one invocation runs at a time)."""
    if runs_on() != "lambda":
        return
    for path in Path(gettempdir()).glob(WORKDIR_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > STALE_WORKDIR_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


def lock_ttl(settings: TrainerSettings, deadline: float | None) -> int:
    """The lock lives as long as this run can: until the invocation's deadline (plus a margin), not longer."""
    if deadline is None:
        return settings.lock_ttl_seconds
    return max(60, int(deadline - time.time()) + 30)
