"""How `flywheel traffic` talks to the API: the reads before the clock starts, then requests sent on schedule from
several keys, and what their answers said.

Open loop: request i is due at start + i/rate whatever the answers before it; a pool of `concurrency` threads, each
with one kept-alive connection, sends the due requests, and a request's latency counts from when it was due
(waiting for a free thread included), so a slow API shows as latency, not as a lower rate. The requests go through
the standard library's http.client: about a tenth of the CPU per request of httpx's async client (measured 0.14 vs
1.4 ms on the 2-core VM), which matters when the load and the replicas share a machine.
"""

from __future__ import annotations

import http.client
import queue
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from flywheel.errors import FlywheelError


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def error_text(body: bytes) -> str:
    """The API's `{"error": ...}` message, else the start of the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    text = str(doc.get("error", doc)) if isinstance(doc, dict) else body.decode(errors="replace")
    return text[:200]


def api_get(client: httpx.Client, url: str, path: str, key: str | None) -> httpx.Response:
    """GET `url + path`; an API that cannot be reached is a one-line error."""
    try:
        return client.get(url + path, headers={"Authorization": f"Bearer {key}"} if key else None)
    except httpx.TransportError as e:
        raise FlywheelError(f"cannot reach the API at {url} ({type(e).__name__}): is `make up` running? "
                            "(else pass --url or set FLYWHEEL_API_URL)") from e  # fmt: skip


def describe_model(client: httpx.Client, url: str, model: str | None, key: str) -> dict[str, Any]:
    """GET /v1/models/<model> (the API's default model when None): version, schema, rollout."""
    if model is None:
        model = str(api_get(client, url, "/v1/models", key).json()["default"])
    r = api_get(client, url, f"/v1/models/{model}", key)
    if r.status_code != 200:
        raise FlywheelError(f"model {model!r} at {url}: {r.status_code} {error_text(r.content)}")
    description: dict[str, Any] = r.json()
    return description


@dataclass
class Tally:
    """What the answers said so far (the sending threads record into it under its lock)."""

    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # HTTP status, or "connection" / "timeout" / "bad answer"
    samples: dict[str, str] = field(default_factory=dict)  # one message per kind of error
    latency: dict[int, list[float]] = field(default_factory=dict)  # answering version -> seconds of each answer
    keys: dict[int, set[int]] = field(default_factory=dict)  # answering version -> indexes of the keys it answered
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answered(self, version: int, key: int, seconds: float) -> None:
        with self.lock:
            self.ok += 1
            self.latency.setdefault(version, []).append(seconds)
            self.keys.setdefault(version, set()).add(key)

    def failed(self, kind: str, message: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.samples.setdefault(kind, message[:200])

    def summary(self) -> dict[str, Any]:
        with self.lock:
            latency = {v: list(s) for v, s in self.latency.items()}
            keys = {v: len(k) for v, k in self.keys.items()}
            errors, samples, ok = dict(self.errors), dict(self.samples), self.ok
        every = [s for seconds in latency.values() for s in seconds]
        return {
            "sent": self.sent,
            "ok": ok,
            "errors": dict(sorted(errors.items())),
            "error_samples": dict(sorted(samples.items())),
            "p50_ms": _ms(every, 0.5),
            "p99_ms": _ms(every, 0.99),
            "versions": {
                str(v): {"requests": len(s), "keys": keys[v], "p50_ms": _ms(s, 0.5), "p99_ms": _ms(s, 0.99)}
                for v, s in sorted(latency.items())
            },
        }


def _ms(seconds: list[float], q: float) -> float | None:
    """The nearest-rank quantile, in milliseconds."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return round(1000 * ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1))], 2)


@dataclass
class Plan:
    url: str
    model: str
    keys: list[str]
    rows: list[dict[str, Any]]
    rate: float
    duration: float
    batch: int
    timeout: float
    concurrency: int
    every: float
    seed: int


def run(plan: Plan, tally: Tally) -> float:
    """Send rate * duration requests on schedule; returns the seconds until the last answer. At Ctrl-C the requests
    not yet sent are dropped and KeyboardInterrupt propagates (the tally holds what was answered)."""
    total = max(1, round(plan.rate * plan.duration))
    due: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    stop, done = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_send, args=(plan, tally, due, stop, n), name=f"traffic-{n}", daemon=True)
               for n in range(min(plan.concurrency, total))]  # fmt: skip
    start = time.perf_counter()
    reporter = threading.Thread(target=_report, args=(plan, tally, start, done), name="traffic-report", daemon=True)
    for t in [*threads, reporter]:
        t.start()
    try:
        for i in range(total):
            at = start + i / plan.rate
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            due.put((i, at))
            tally.sent += 1
        for _ in threads:
            due.put(None)
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        done.set()
    return time.perf_counter() - start


def _send(plan: Plan, tally: Tally, due: queue.SimpleQueue[tuple[int, float] | None], stop: threading.Event,
          n: int) -> None:  # fmt: skip
    """One sending thread: take due requests until the end (None) and send each on this thread's connection."""
    rng = random.Random(f"{plan.seed}-{n}")
    target = _Target(plan.url, plan.timeout)
    path = f"{target.base}/v1/models/{plan.model}/predict"
    headers = [{"Authorization": f"Bearer {k}", "Content-Type": "application/json"} for k in plan.keys]
    while (item := due.get()) is not None and not stop.is_set():
        i, at = item
        key = i % len(plan.keys)
        body = orjson.dumps({"instances": [plan.rows[rng.randrange(len(plan.rows))] for _ in range(plan.batch)]})
        try:
            status, answer = target.post(path, body, headers[key])
        except TimeoutError:
            tally.failed("timeout", f"no answer within {plan.timeout:g} s")
            continue
        except (OSError, http.client.HTTPException) as e:
            tally.failed("connection", f"{type(e).__name__}: {e}")
            continue
        if status != 200:
            tally.failed(str(status), error_text(answer))
            continue
        try:
            version = int(orjson.loads(answer)["model_version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            tally.failed("bad answer", answer.decode(errors="replace"))
            continue
        tally.answered(version, key, time.perf_counter() - at)  # from when it was due: waiting for a thread counts
    target.close()


class _Target:
    """One kept-alive connection to the API, opened again when the server closed it."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.base = parts.path.rstrip("/")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connect = lambda: cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for _ in range(2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = self.connect()
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:  # a fresh connection refused: that is the API's answer
                    raise
                # else the server had closed this idle connection (its keep-alive timeout): once more on a new one
            except BaseException:
                self.close()
                raise
        raise http.client.HTTPException("the connection closed twice")  # not reached: the second try is fresh

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _report(plan: Plan, tally: Tally, start: float, done: threading.Event) -> None:
    while not done.wait(plan.every):
        s = tally.summary()
        versions = ", ".join(f"v{v} {f['requests']}" for v, f in s["versions"].items()) or "none yet"
        errors = sum(s["errors"].values())
        latency = f"; p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms" if s["ok"] else ""
        say(f"{time.perf_counter() - start:5.0f} s: {s['sent']} sent, {s['ok']} ok, {errors} errors; answered by "
            f"{versions}{latency}")  # fmt: skip
