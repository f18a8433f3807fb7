"""Serving benchmark: Flywheel's API vs a naive FastAPI endpoint vs raw predict, with wrk on loopback.

    python bench/serve.py            # throughput/latency at c=1, 16, 64 and 1,000-row batches
    python bench/serve.py --swaps    # also: move the alias every few seconds under load
    python bench/serve.py --two-models   # only: two models in one replica, both swapping under load
    python bench/serve.py --peer mlserver   # only: Flywheel vs MLServer on the same model.joblib (V2, pd codec)
    python bench/serve.py --servers  # only: the same app under uvicorn, granian, ... (bench/http_servers.py)

Prints req/s, rows/s, p50, p99 and errors (closed loop: wrk, c connections each waiting for its answer), then
(unless --no-open-loop) each server's open-loop p50/p99/p99.9 at 50% and 80% of its own c=64 req/s
(bench/open_loop.py: a fixed arrival rate, latency from each request's due time). Needs wrk (Debian package
`wrk`) and, for the open loop's client, gcc: installed with apt-get when missing and run as root. Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import http_servers, open_loop
from bench._local import ROOT, free_port, make_bucket, start_api, start_moto, stop_processes, train_model, wait_http
from bench.open_loop import auth_lua, ensure_wrk

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same thread budget for every contender

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def wrk(url: str, body_file: str, conns: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA.format(body=body_file) + auth_lua())
    out = subprocess.run(
        [ensure_wrk(), "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "errors": errors, "requests": total}


def raw_predict(model: Any, one: dict[str, object], rows: list[dict[str, object]]) -> None:
    import pandas as pd

    for label, records, n in (("1 row", [one], 2000), ("1,000 rows", rows, 50)):
        frame = pd.DataFrame.from_records(records)
        model.predict(frame)
        t = time.perf_counter()
        for _ in range(n):
            model.predict(pd.DataFrame.from_records(records))
        per = (time.perf_counter() - t) / n
        print(f"raw predict {label:>10}: {per * 1000:8.3f} ms/call  {len(records) / per:12,.0f} rows/s")


def two_models(seconds: int, swap_every: float) -> int:
    """One replica serving two models (savings, churn), each with two versions; wrk drives both at once
    (c=8 each) while each model's alias flips between its versions every `swap_every` seconds, staggered."""
    from flywheel.data.sample_data import churn, savings
    from flywheel.registry.store import Registry
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    procs: list[subprocess.Popen[bytes]] = [moto]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        s3, bucket = s3_client(), "flywheel-bench"
        make_bucket(s3, bucket)
        bodies, registries = {}, {}
        for name, gen, target in (("savings", savings, "monthly_savings"), ("churn", churn, "churned")):
            for seed in (1, 2):
                train_model(s3, bucket, name, gen(5_000, seed=seed, drift=seed - 1.0))
            registries[name] = Registry(s3, bucket, name)
            rows = json.loads(gen(1, seed=5).drop(columns=[target]).to_json(orient="records"))
            bodies[name] = tmp / f"{name}.json"
            bodies[name].write_text(json.dumps({"instances": rows}))
        port = free_port()
        procs.append(start_api(bucket, port, FLYWHEEL_POLL_INTERVAL_SECONDS="1"))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v1/models/churn")

        def drive(label: str, conns: dict[str, int]) -> None:
            out: dict[str, dict[str, float]] = {}
            runs = [threading.Thread(target=lambda n=n, c=c: out.update({n: wrk(f"{base}/v1/models/{n}/predict",
                                     str(bodies[n]), c, seconds)})) for n, c in conns.items()]  # fmt: skip
            for t in runs:
                t.start()
            for t in runs:
                t.join()
            for n, r in sorted(out.items()):
                print(f"{label:>14} {n:8} {conns[n]:3} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                      f"{r['errors']:7.0f} {r['requests']:9.0f}")  # fmt: skip

        print(f"\ntwo models, one replica, 1 row per request, {seconds} s per run")
        print(
            f"{'run':>14} {'model':8} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'requests':>9}"
        )
        drive("one model", {"savings": 16})
        drive("two, steady", {"savings": 8, "churn": 8})
        stop, moves = threading.Event(), dict.fromkeys(registries, 0)

        def swapper(name: str, delay: float) -> None:
            if stop.wait(delay):
                return
            while True:
                registry = registries[name]
                alias = registry.alias()
                assert alias is not None
                registry.move_alias(1 if alias.version == 2 else 2, alias, actor="bench", reason="swap")
                moves[name] += 1
                if stop.wait(swap_every):
                    return

        swappers = [threading.Thread(target=swapper, args=(n, i * swap_every / 2)) for i, n in enumerate(registries)]
        for t in swappers:
            t.start()
        drive("two, swapping", {"savings": 8, "churn": 8})
        stop.set()
        for t in swappers:
            t.join()
        with urllib.request.urlopen(base + "/metrics") as r:
            text = r.read().decode()
        for n in registries:
            ok = re.search(rf'flywheel_model_reloads_total{{model="{n}",result="success"}} ([\d.]+)', text)
            print(f"{n}: {moves[n]} alias moves (every {swap_every}s), {float(ok.group(1)) - 1 if ok else 0:.0f} "
                  "swaps done by the replica")  # fmt: skip
    finally:
        stop_processes(procs, tmp)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument("--swaps", action="store_true", help="also run the alias-swap mode")
    parser.add_argument("--swap-every", type=float, default=3.0)
    parser.add_argument("--two-models", action="store_true", help="only the two-model swap-under-load figure")
    parser.add_argument("--peer", choices=["mlserver"], help="only: side by side with this peer server")
    parser.add_argument(
        "--processes", type=int, default=1, help="--peer: flywheel --workers N, mlserver parallel_workers N"
    )
    parser.add_argument("--peer-processes", type=int, default=None,
                        help="--peer: mlserver parallel_workers M instead (its best here: 1)")  # fmt: skip
    parser.add_argument("--open-loop", action=argparse.BooleanOptionalAction, default=True,
                        help="each server's open-loop latency at 50%% / 80%% of the c=64 req/s it just measured "
                        "(bench/open_loop.py)")  # fmt: skip
    parser.add_argument("--open-conns", type=int, default=32, help="open loop: connections")
    parser.add_argument("--servers", nargs="?", const="all", metavar="NAMES",
                        help="only: the HTTP-layer comparison; NAMES: comma-separated among "
                        f"{', '.join(http_servers.SERVERS)} (default: all)")  # fmt: skip
    parser.add_argument("--heads", action="store_true", help="--servers: also hostile heads (bench/head_probe.py)")
    args = parser.parse_args()
    ensure_wrk()
    if args.two_models:
        return two_models(max(args.seconds * 3, 30), args.swap_every)

    from flywheel.data.sample_data import savings
    from flywheel.jobs.retrain import retrain
    from flywheel.registry.model_loading import open_version
    from flywheel.registry.store import Registry
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    procs: list[subprocess.Popen[bytes]] = [moto]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        s3, bucket = s3_client(), "flywheel-bench"
        make_bucket(s3, bucket)
        s3.put_object(Bucket=bucket, Key="data/a.csv", Body=savings(20_000, seed=1).to_csv(index=False).encode())
        retrain(TrainerSettings(bucket=bucket), s3)
        s3.put_object(
            Bucket=bucket, Key="data/b.csv", Body=savings(20_000, seed=2, drift=1).to_csv(index=False).encode()
        )
        retrain(TrainerSettings(bucket=bucket), s3)
        registry = Registry(s3, bucket, "savings")
        version = open_version(registry, 2, None)  # the bench's versions are unsigned: sha256-checked only
        model_path = tmp / "model.joblib"
        model_path.write_bytes(version.model_bytes())
        print(f"model: v2 {registry.manifest(2)['estimator']}, {model_path.stat().st_size:,} bytes")
        if args.peer:  # bench/peer_mlserver.py
            from bench import peer_mlserver

            return peer_mlserver.run(wrk, args.seconds, bucket, model_path, tmp, procs, args.processes,
                                     open_conns=args.open_conns if args.open_loop else 0,
                                     peer_processes=args.peer_processes)  # fmt: skip

        frame = savings(1000, seed=5).drop(columns=["monthly_savings"])
        rows = json.loads(frame.to_json(orient="records"))
        one_body, batch_body = tmp / "one.json", tmp / "batch.json"
        one_body.write_text(json.dumps({"instances": rows[:1]}))
        batch_body.write_text(json.dumps({"instances": rows}))
        if args.servers:  # bench/http_servers.py
            http_servers.run(wrk, args.seconds, bucket, {"one": one_body, "batch": batch_body}, procs, args.servers,
                             args.open_loop, args.open_conns, args.heads)  # fmt: skip
            return 0

        api_port, naive_port = free_port(), free_port()
        procs.append(start_api(bucket, api_port, FLYWHEEL_POLL_INTERVAL_SECONDS="1"))
        naive = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.naive_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(naive_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env={**os.environ, "NAIVE_BUCKET": bucket, "NAIVE_VERSION": "2"},
        )
        procs.append(naive)
        wait_http(f"http://127.0.0.1:{naive_port}/docs")
        targets = {
            "flywheel": f"http://127.0.0.1:{api_port}/v1/predict",
            "naive": f"http://127.0.0.1:{naive_port}/predict",
        }
        raw_predict(version.load_model(), rows[0], rows)
        print(f"\n{'server':9} {'load':>16} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        results: dict[tuple[str, str], dict[str, float]] = {}
        open_results: dict[str, tuple[float, open_loop.Points]] = {}
        for label, body, conns, per in (
            ("1 row, c=1", one_body, 1, 1),
            ("1 row, c=16", one_body, 16, 1),
            ("1 row, c=64", one_body, 64, 1),
            ("1000 rows, c=4", batch_body, 4, 1000),
        ):
            for name, url in targets.items():
                wrk(url, str(body), conns, 2)  # warm-up
                r = wrk(url, str(body), conns, args.seconds)
                results[(name, label)] = r
                print(f"{name:9} {label:>16} {r['rps']:9.0f} {r['rps'] * per:10.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                      f"{r['errors']:6.0f}", flush=True)  # fmt: skip
                if args.open_loop and conns == 64:  # its capacity, measured just now
                    points = open_loop.at_fractions(url, str(one_body), r["rps"], args.seconds, args.open_conns)
                    open_results[name] = (r["rps"], points)
        f64, n64 = results[("flywheel", "1 row, c=64")], results[("naive", "1 row, c=64")]
        f1, n1 = results[("flywheel", "1 row, c=1")], results[("naive", "1 row, c=1")]
        print(f"\nc=64: flywheel/naive = {f64['rps'] / n64['rps']:.1f}x (target >= 3x), p99 {f64['p99']:.1f} ms "
              f"(target <= 30)")  # fmt: skip
        print(f"c=1: p50 flywheel - naive = {f1['p50'] - n1['p50']:+.2f} ms (target <= +0.5)")
        if open_results:
            open_loop.print_table(open_results, args.seconds, args.open_conns)

        if args.swaps:
            stop = threading.Event()
            moves = [0]

            def swapper() -> None:
                while not stop.wait(args.swap_every):
                    alias = registry.alias()
                    assert alias is not None
                    registry.move_alias(1 if alias.version == 2 else 2, alias, actor="bench", reason="swap")
                    moves[0] += 1

            t = threading.Thread(target=swapper)
            t.start()
            r = wrk(targets["flywheel"], str(one_body), 16, max(args.seconds * 3, 30))
            stop.set()
            t.join()
            print(f"\nswaps: {moves[0]} alias moves (every {args.swap_every}s) during {r['requests']:.0f} requests "
                  f"at c=16: failed {r['errors']:.0f}, p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s")  # fmt: skip
    finally:
        stop_processes(procs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
