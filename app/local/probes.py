"""Probes `flywheel up` uses to know its children are up: HTTP on loopback, and what the API replicas serve."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

Procs = Iterable[tuple[str, subprocess.Popen[bytes]]]


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


def wait_until(check: Callable[[], bool], timeout: float, procs: Procs) -> bool:
    """`check` became true within `timeout` (False when not: the caller decides); RuntimeError when one of
    `procs` exits meanwhile (the stack cannot work without it)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        for name, proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}; see its log")
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def models_ready(url: str, key: str) -> dict[str, int]:
    """The models the replica at `url` serves, and which version of each (`key`: an API key)."""
    headers = {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url + "/v1/models", headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 - loopback
            models = json.loads(r.read())["models"]
    except (OSError, ValueError, KeyError):
        return {}
    return {str(m["name"]): int(m["version"]) for m in models if m.get("ready") and m.get("version") is not None}


def busy_ports(ports: dict[str, int]) -> list[str]:
    """The ports (by what they are for) that another program holds on 127.0.0.1."""
    busy = []
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({what})")
    return busy


def _readyz(url: str, key: str) -> dict[str, Any] | None:
    """The replica's /readyz body when it answers 200 (what it serves, told to a key only); None otherwise."""
    request = urllib.request.Request(url + "/readyz", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 - loopback
            body = json.loads(r.read())
    except (OSError, ValueError):  # a 503 (HTTPError) included
        return None
    return body if isinstance(body, dict) else None


def ready(url: str, key: str) -> bool:
    """The replica at `url` answers /readyz with 200."""
    return _readyz(url, key) is not None


def served(url: str, key: str) -> int | None:
    """The default model's version the replica at `url` serves."""
    try:
        return int((_readyz(url, key) or {})["model_version"])
    except (KeyError, TypeError, ValueError):
        return None


def wait_for_models(
    bucket: str, seeded: list[str], urls: list[str], key: str, watched: Procs, say: Callable[[str], None]
) -> dict[str, int | None]:
    """Every model with a production version is served by every replica; a model without one (registered, no
    batch yet) is listed, never waited for; one that does not come up is named, and the stack stays up.
    Returns every registered model and its production version (None: none yet)."""
    from flywheel.registry.registrations import registered
    from flywheel.registry.store import Registry
    from flywheel.storage import s3_client

    s3 = s3_client()

    def production() -> dict[str, int | None]:
        aliases = {name: Registry(s3, bucket, name).alias() for name in registered(s3, bucket)}
        return {name: a.version if a else None for name, a in aliases.items()}

    def trained() -> bool:  # polled: only the seeded models' aliases, not every registration
        return all(Registry(s3, bucket, n).alias() for n in seeded)

    if seeded:
        say(f"5/5 training the seed batch of {', '.join(seeded)} (first start: ~10-30 s each), then serving")
        if not wait_until(trained, 300, watched):
            late = ", ".join(n for n in seeded if not Registry(s3, bucket, n).alias())
            say(f"warning: no version of {late} after 300 s: see the worker's log")
    else:
        say("5/5 waiting for the replicas to serve every model that has a production version")
    models = production()
    wanted = {n for n, v in models.items() if v}
    for url in urls:

        def serving(url: str = url) -> bool:  # every model listed ready, and /readyz says so too (a round trip later)
            return wanted <= set(models_ready(url, key)) and ready(url, key)

        if not wait_until(serving, 120, watched):
            late = ", ".join(sorted(wanted - set(models_ready(url, key))))
            say(f"warning: {url} does not serve {late} yet: see its log")
    return models
