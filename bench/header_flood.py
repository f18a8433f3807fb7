"""Request heads under attack, per HTTP protocol: what one replica's memory and its clients' latency do.

    python bench/header_flood.py [--seconds 5] [--flood-mb 96] [--sockets 3]

For uvicorn's stock httptools protocol, its h11 protocol and app/http_limits.py's bounded httptools protocol, one
API process (the savings model, capture on, keys off on loopback) gets:
1. wrk, 1 row per request, c=16: requests/s and p99 (the price of the protocol on ordinary traffic);
2. `--sockets` clients each sending `--flood-mb` MB of a request head that never ends (opening another socket
   whenever the server closes one), while one client predicts in a loop for `--flood-seconds`: that client's
   p50/p99, the process's RSS before, at its peak during the flood and after, and how
   each flooding socket ended (the status it got, or the time it was still open when the sender gave up).
Never pass/fail: it prints figures (docs/serving.md, "Request heads").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import ROOT, free_port, make_bucket, start_moto, stop_processes, train_model, wait_http
from bench.serve import wrk

PROTOCOLS = {
    "httptools (stock)": "httptools",
    "h11": "h11",
    "bounded httptools": "app.http_limits:BoundedHttpToolsProtocol",
}


def start(bucket: str, port: int, http: str) -> subprocess.Popen[bytes]:
    code = ("from app.server_tuning import pin_threads; pin_threads(1); import uvicorn; "
            f"uvicorn.run('app.api:create_app', factory=True, host='127.0.0.1', port={port}, log_level='warning', "
            f"access_log=False, loop='uvloop', http={http!r})")  # fmt: skip
    env = {**os.environ, "FLYWHEEL_BUCKET": bucket, "FLYWHEEL_API_AUTH": "off",
           "FLYWHEEL_METRICS_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(port: int, megabytes: int, outcome: list[str], stop: threading.Event) -> None:
    """Send an endless head of up to `megabytes` MB; when the server closes the socket, open another, until `stop`."""
    chunk = b"X-Filler: " + b"a" * 65536
    while not stop.is_set():
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        started = time.monotonic()
        try:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            for _ in range(megabytes * 16):
                if stop.is_set():
                    break
                sock.sendall(chunk)
            sock.settimeout(2)
            answer = sock.recv(100)
            outcome.append(answer.split(b"\r\n", 1)[0].decode() or "closed")
        except TimeoutError:
            outcome.append(f"open after {time.monotonic() - started:.0f} s")
        except OSError as e:
            outcome.append(f"closed by the server ({type(e).__name__})")
        finally:
            sock.close()


def under_flood(pid: int, port: int, body: bytes, sockets: int, megabytes: int, seconds: int,
                rss: Callable[[int], float] = rss_mb) -> dict[str, object]:  # fmt: skip
    """A client predicting while `sockets` send `megabytes` heads; `rss`: the server's memory (default: `pid`'s)."""
    import httpx

    before = rss(pid)
    outcome: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=flood, args=(port, megabytes, outcome, stop)) for _ in range(sockets)]
    for t in senders:
        t.start()
    latencies, peak, failed = [], before, 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                answer = client.post(f"http://127.0.0.1:{port}/v1/predict", content=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                failed += 1
            latencies.append((time.perf_counter() - t0) * 1000)
            peak = max(peak, rss(pid))
    stop.set()
    for t in senders:
        t.join()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"rss_before": before, "rss_peak": peak, "rss_after": rss(pid), "requests": len(latencies),
            "p50": quantiles[49], "p99": quantiles[98], "failed": failed,
            "sockets": [f"{outcome.count(o)}x {o}" for o in sorted(set(outcome))]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--flood-mb", type=int, default=96)
    parser.add_argument("--sockets", type=int, default=3)
    parser.add_argument("--flood-seconds", type=int, default=20, help="how long the client predicts under the flood")
    args = parser.parse_args()
    from flywheel.data.sample_data import savings
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    procs: list[subprocess.Popen[bytes]] = [moto]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        s3, bucket = s3_client(), "flywheel-bench"
        make_bucket(s3, bucket)
        train_model(s3, bucket, "savings", savings(20_000, seed=1))
        row = json.loads(savings(1, seed=5).drop(columns=["monthly_savings"]).to_json(orient="records"))
        body = json.dumps({"instances": row}).encode()
        body_file = tmp / "body.json"
        body_file.write_bytes(body)
        print(f"{'protocol':20} {'req/s c=16':>10} {'p99 ms':>7} | flood: {'p50 ms':>7} {'p99 ms':>7} "
              f"{'RSS MB before/peak/after':>25} {'failed':>6}  flooding sockets")  # fmt: skip
        for label, http in PROTOCOLS.items():
            port = free_port()
            proc = start(bucket, port, http)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/v1/predict"
            wrk(url, str(body_file), 16, 2)  # warm-up
            load = wrk(url, str(body_file), 16, args.seconds)
            f = under_flood(proc.pid, port, body, args.sockets, args.flood_mb, args.flood_seconds)
            rss = f"{f['rss_before']:.0f} / {f['rss_peak']:.0f} / {f['rss_after']:.0f}"
            print(f"{label:20} {load['rps']:10,.0f} {load['p99']:7.1f} | {f['p50']:13.1f} {f['p99']:7.1f} "
                  f"{rss:>25} {f['failed']}/{f['requests']}  {', '.join(f['sockets'])}", flush=True)  # type: ignore[arg-type]  # fmt: skip
            proc.terminate()
            proc.wait(timeout=30)
            procs.remove(proc)
    finally:
        stop_processes(procs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
