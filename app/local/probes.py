"""Probes `flywheel up` uses to know its children are up: HTTP on loopback, and what the API replicas serve."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback URLs we built
            return bool(r.status == 200)
    except OSError:
        return False


def wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}; see its log")
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def all_served(url: str, key: str) -> bool:
    """Every model the replica at `url` serves is ready (`key`: an API key)."""
    headers = {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url + "/v1/models", headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 - loopback
            models = json.loads(r.read())["models"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(models) and all(m.get("ready") for m in models)


def served(url: str, key: str) -> int | None:
    """The default model's version the replica at `url` serves (/readyz tells it to a key only)."""
    request = urllib.request.Request(url + "/readyz", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 - loopback
            return int(json.loads(r.read())["model_version"])
    except (OSError, ValueError, KeyError):
        return None
