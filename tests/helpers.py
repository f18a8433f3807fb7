"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from app.local.worker import LocalContext
from flywheel.data.sample_data import GENERATORS


def csv_bytes(rows: int, seed: int = 0, drift: float = 0.0, dataset: str = "savings") -> bytes:
    return GENERATORS[dataset](rows, seed=seed, drift=drift).to_csv(index=False).encode()


T = TypeVar("T")

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


def eventually(
    read: Callable[[], T],
    check: Callable[[T], object] = bool,
    timeout: float = 60,
    what: str = "",
    interval: float = 0.1,
) -> T:
    """Poll `read()` until `check(value)` holds and return that value: for what a background thread or another
    process does (a log line, a metric, a file). Returns as soon as it holds; after `timeout` seconds the test
    fails naming `what` and the last value read (its end, when long: a log's last lines)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            seen = value if isinstance(value, str) else repr(value)
            if len(seen) > 3000:
                seen = "..." + seen[-3000:]
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last seen:\n{seen}")
        time.sleep(interval)


def settled(read: Callable[[], T], quiet: float = 0.5, timeout: float = 30, what: str = "") -> T:
    """Read a value another process writes late (a worker's metrics are written every 0.1 s) once it has stopped
    changing: two reads `quiet` seconds apart agree. For a baseline taken after traffic whose counts may still be
    on their way."""
    deadline = time.monotonic() + timeout
    value = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == value:
            return now
        value = now
    raise AssertionError(f"timed out after {timeout}s waiting for {what or read} to settle; last seen: {value!r}")
