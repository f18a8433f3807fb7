"""The HTTP layer by measurement: the same app (app.api:create_app) under each server (bench/serve.py --servers).

Contenders (each one API replica on loopback, one numeric thread per process, head limits as noted):
  uvicorn        uvicorn, uvloop, app/http_limits.py's bounded httptools protocol, 1 process (the layer chosen;
                 `flywheel serve` adds app/predict_protocol.py, the prediction routes answered from the parser)
  uvicorn x2     the same with --workers 2
  granian        granian --interface asgi --loop uvloop, 1 worker, its default runtime (mt, 1 runtime thread)
  granian st     the same with --runtime-mode st
  granian x2     --runtime-mode st --workers 2
  flywheel serve `flywheel serve --workers 1` as this tree has it (an agent and its request worker, if so)
Granian runs with --http 1 and the project's head limits where it has a knob: --http1-buffer-size (the most a
connection buffers: it bounds the head) and --http1-header-read-timeout (FLYWHEEL_HEADER_TIMEOUT_SECONDS).
What they do (bench/head_probe.py, granian 2.8.9): a head over the buffer (default 417,792 B) gets 431 and the
connection is closed, the bound applying per read (a 33 KB head in one write passed a 32 KB buffer; 64 KB did not);
more than 100 headers get 431 (hyper's own limit: no granian option); a head not complete within the timeout
(default 30 s, at most 60 s), silent or dripped, has its connection closed without an answer (no 408).

Every server is up for the whole run and the loads go round-robin (each load against each server in turn), so the
noise of a shared machine spreads over all of them. Per load: a 2 s warm-up, then `seconds` measured with wrk;
`cpu ms/req` is the server's CPU time (every process and thread of it) over the measured run per request answered.
With --open-loop each server's c=64 point is followed by open-loop runs at 50% / 80% of the req/s it just
measured (bench/open_loop.py; one table at the end), and with
--heads bench/head_probe.py's hostile heads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import open_loop as ol
from bench._local import ROOT, cpu_seconds, free_port, start_api, wait_http

HEADER_BYTES, HEADER_SECONDS = 32 * 1024, 10  # flywheel/settings.py HttpLimits defaults
GRANIAN_LIMITS = ("--http1-buffer-size", str(HEADER_BYTES), "--http1-header-read-timeout", str(HEADER_SECONDS * 1000))
LOADS = (("1 row, c=1", "one", 1, 1), ("1 row, c=16", "one", 16, 1), ("1 row, c=64", "one", 64, 1),
         ("1000 rows, c=1", "batch", 1, 1000), ("1000 rows, c=4", "batch", 4, 1000))  # fmt: skip


def uvicorn_cmd(port: int, workers: int = 1) -> list[str]:
    code = (f"import uvicorn; uvicorn.run('app.api:create_app', factory=True, host='127.0.0.1', port={port}, "
            f"workers={workers}, log_level='warning', access_log=False, loop='uvloop', "
            "http='app.http_limits:BoundedHttpToolsProtocol')")  # fmt: skip
    return [sys.executable, "-c", code]


def granian_cmd(port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port",
            str(port), "--http", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning", *GRANIAN_LIMITS,
            *options, "app.api:create_app"]  # fmt: skip


SERVERS: dict[str, Callable[[int], list[str]] | None] = {
    "uvicorn": uvicorn_cmd,
    "uvicorn x2": lambda port: uvicorn_cmd(port, workers=2),
    "granian": granian_cmd,
    "granian st": lambda port: granian_cmd(port, "--runtime-mode", "st"),
    "granian x2": lambda port: granian_cmd(port, "--runtime-mode", "st", "--workers", "2"),
    "flywheel serve": None,  # bench/_local.py start_api: the CLI itself
}


def server_env(bucket: str) -> dict[str, str]:
    threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")  # as pin_threads
    return {**os.environ, **threads, "FLYWHEEL_BUCKET": bucket, "FLYWHEEL_API_AUTH": "off",
            "FLYWHEEL_METRICS_PORT": str(free_port())}  # fmt: skip


def start(name: str, bucket: str) -> tuple[subprocess.Popen[bytes], int]:
    port, command = free_port(), SERVERS[name]
    if command is None:
        return start_api(bucket, port, FLYWHEEL_METRICS_PORT=str(free_port())), port
    proc = subprocess.Popen(command(port), cwd=ROOT, env=server_env(bucket), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
    return proc, port


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "granian", "httptools", "uvloop", "starlette"))


def run(
    wrk: Callable[[str, str, int, int], dict[str, float]],
    seconds: int,
    bucket: str,
    bodies: dict[str, Path],
    procs: list[subprocess.Popen[bytes]],
    servers: str,
    open_loop: bool,
    open_conns: int,
    heads: bool = False,
) -> dict[tuple[str, str], dict[str, float]]:
    """Start the servers (comma-separated names of SERVERS, or 'all'), drive each load against each in turn,
    print the tables."""
    names = list(SERVERS) if servers == "all" else servers.split(",")
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--servers: unknown {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    ports, pids = {}, {}
    for name in names:
        print(f"starting {name}", flush=True)
        proc, ports[name] = start(name, bucket)
        procs.append(proc)
        pids[name] = proc.pid
    print(versions())
    print(f"\n{'server':15} {'load':>15} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6} "
          f"{'cpu ms/req':>10}")  # fmt: skip
    results: dict[tuple[str, str], dict[str, float]] = {}
    open_results: dict[str, tuple[float, ol.Points]] = {}
    for label, kind, conns, per in LOADS:
        for name in names:
            url = f"http://127.0.0.1:{ports[name]}/v1/predict"
            wrk(url, str(bodies[kind]), conns, 2)  # warm-up
            cpu = cpu_seconds(pids[name])
            r = results[(name, label)] = wrk(url, str(bodies[kind]), conns, seconds)
            r["cpu_ms"] = (cpu_seconds(pids[name]) - cpu) * 1000 / max(1.0, r["requests"])
            print(f"{name:15} {label:>15} {r['rps']:8.0f} {r['rps'] * per:9.0f} {r['p50']:7.2f} {r['p99']:8.2f} "
                  f"{r['errors']:6.0f} {r['cpu_ms']:10.2f}", flush=True)  # fmt: skip
            if open_loop and kind == "one" and conns == 64:  # its capacity, measured just now
                open_results[name] = (r["rps"], ol.at_fractions(url, str(bodies["one"]), r["rps"], seconds, open_conns))
    print("\nreq/s by load (p99 ms)")
    print(f"{'load':>15} " + " ".join(f"{n:>17}" for n in names))
    for label, *_ in LOADS:
        cells = [f"{results[(n, label)]['rps']:7.0f} ({results[(n, label)]['p99']:6.1f})" for n in names]
        print(f"{label:>15} " + " ".join(f"{c:>17}" for c in cells))
    if open_results:
        ol.print_table(open_results, seconds, open_conns)
    if heads:
        from bench.head_probe import probe

        for name in names:
            probe(name, pids[name], ports[name], bodies["one"].read_bytes())
    return results
