"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.local.worker import LocalContext
from flywheel.data.sample_data import GENERATORS


def csv_bytes(rows: int, seed: int = 0, drift: float = 0.0, dataset: str = "savings") -> bytes:
    return GENERATORS[dataset](rows, seed=seed, drift=drift).to_csv(index=False).encode()


# the attributes Powertools reads from a Lambda context: the local worker's stand-in serves the tests too
FakeLambdaContext = LocalContext


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "", interval: float = 0.1) -> None:
    """Poll until `predicate()` is true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
