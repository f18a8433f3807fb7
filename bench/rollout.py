"""Rollout benchmark: what a shadow (or canary) candidate costs the replica serving production.

    python bench/rollout.py                  # production alone, shadow at 100%, production alone again
    python bench/rollout.py --canary 0.5     # also a canary answering half the requests

One replica (one process) serves v1 of the savings model; v2 (trained on drifted data) is the candidate. For
each phase, wrk drives 1-row requests at c=64 and 1,000-row requests at c=4; the replica's CPU time
(/proc/<pid>/stat, every thread) is read around each run, so CPU per request compares the work the process did.
The last column is the share of production's requests the candidate also computed (shadow runs, or canary
answers) on the worker process that exports metrics; a shadow below 100% dropped samples (queue full).
Targets (issue 14): shadow at 100% costs at most 2x production-only CPU
per request, and p99 at c=64 stays within 20% of production-only. Prints figures; never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import cpu_seconds, free_port, make_bucket, metric, start_api, start_moto, stop_processes
from bench.serve import wrk

os.environ.setdefault("OMP_NUM_THREADS", "1")
COUNTERS = ("flywheel_rollout_shadow_compared_total", "flywheel_rollout_shadow_dropped_total")


def rollout_of(port: int) -> dict[str, object] | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/savings", timeout=5) as r:
        found: dict[str, object] | None = json.loads(r.read())["rollout"]
        return found


def wait(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(str(predicate))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument("--canary", type=float, default=0.0, help="also measure a canary at this share")
    parser.add_argument("--processes", type=int, default=2, help="replica processes (flywheel serve --workers N)")
    parser.add_argument("--repeat", type=int, default=2, help="shadow phases, each between production-alone ones")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    from flywheel.data.sample_data import savings
    from flywheel.jobs.retrain import retrain
    from flywheel.registry.store import Registry
    from flywheel.release import rollout_actions
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    procs = [moto]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-rollout-"))
    try:
        s3, bucket = s3_client(), "flywheel-bench"
        make_bucket(s3, bucket)
        for seed, drift in ((1, 0.0), (2, 1.0)):
            s3.put_object(Bucket=bucket, Key=f"data/{seed}.csv",
                          Body=savings(20_000, seed=seed, drift=drift).to_csv(index=False).encode())  # fmt: skip
            retrain(TrainerSettings(bucket=bucket, gate_tolerance=1.0), s3)
        reg = Registry(s3, bucket, "savings")
        reg.move_alias(1, reg.alias(), actor="bench", reason="v1 serves, v2 is the candidate")
        print(f"production v1 {reg.manifest(1)['estimator']}, candidate v2 {reg.manifest(2)['estimator']}")

        frame = savings(1000, seed=5).drop(columns=["monthly_savings"])
        rows = json.loads(frame.to_json(orient="records"))
        one, batch = tmp / "one.json", tmp / "batch.json"
        one.write_text(json.dumps({"instances": rows[:1]}))
        batch.write_text(json.dumps({"instances": rows}))
        port, metrics_port = free_port(), free_port()
        api = start_api(bucket, port, args.processes, FLYWHEEL_POLL_INTERVAL_SECONDS="1",
                        FLYWHEEL_METRICS_PORT=str(metrics_port))  # fmt: skip
        procs.append(api)
        url = f"http://127.0.0.1:{port}/v1/predict"

        def roles() -> dict[str, float]:
            return {role: metric(metrics_port, "flywheel_rollout_requests_total", model="savings", role=role)
                    for role in ("production", "candidate")}  # fmt: skip

        def phase(label: str) -> dict[str, dict[str, float]]:
            out = {}
            for point, body, conns in (("1 row, c=64", one, 64), ("1000 rows, c=4", batch, 4)):
                wrk(url, str(body), conns, 2)  # warm-up
                before, runs = cpu_seconds(api.pid), roles()
                r = wrk(url, str(body), conns, args.seconds)
                r["cpu_ms"] = (cpu_seconds(api.pid) - before) / max(r["requests"], 1) * 1000
                after = roles()
                # the worker holding the metrics port: candidate requests (shadow runs) per production request
                served = after["production"] - runs["production"]
                r["coverage"] = (after["candidate"] - runs["candidate"]) / served if served else float("nan")
                out[point] = r
                print(f"{label:18} {point:>15} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['cpu_ms']:10.3f} "
                      f"{r['errors']:6.0f} {r['coverage']:9.0%}")  # fmt: skip
            return out

        print(f"\n{'phase':18} {'load':>15} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} {'errors':>6} "
              f"{'candidate':>9}")  # fmt: skip
        alone, shadow = [phase("production alone")], []
        for _ in range(args.repeat):
            rollout_actions.begin(reg, 2, actor="bench", mode="shadow", share=1.0)
            wait(lambda: rollout_of(port) is not None)
            time.sleep(3)  # every worker process polls the rollout (each answers /v1/models in turn)
            before = {n: metric(metrics_port, n, model="savings") for n in COUNTERS}
            shadow.append(phase("shadow at 100%"))
            after = {n: metric(metrics_port, n, model="savings") - before[n] for n in COUNTERS}
            rollout_actions.abort(reg, actor="bench", reason="bench phase over")
            wait(lambda: rollout_of(port) is None)
            time.sleep(3)
            alone.append(phase("production alone"))
            print("  one worker's shadow counters: " + ", ".join(f"{n.split('_shadow_')[1]} {v:,.0f}"
                                                               for n, v in after.items()))  # fmt: skip
        if args.canary:
            rollout_actions.begin(reg, 2, actor="bench", mode="canary", share=args.canary)
            wait(lambda: rollout_of(port) is not None)
            time.sleep(3)
            phase(f"canary at {args.canary:g}")
            rollout_actions.abort(reg, actor="bench", reason="bench phase over")

        print()
        for point in alone[0]:
            base_cpu = sum(a[point]["cpu_ms"] for a in alone) / len(alone)
            base_p99 = sum(a[point]["p99"] for a in alone) / len(alone)
            cpu = sum(x[point]["cpu_ms"] for x in shadow) / len(shadow)
            p99 = sum(x[point]["p99"] for x in shadow) / len(shadow)
            covered = sum(x[point]["coverage"] for x in shadow) / len(shadow)
            print(f"{point}: shadow ran on {covered:.0%} of requests; CPU/request {cpu / base_cpu:.2f}x production "
                  f"alone (target <= 2x); mean p99 {p99:.2f} ms vs {base_p99:.2f} ms = {p99 / base_p99 - 1:+.0%} "
                  f"(target <= +20%)")  # fmt: skip
    finally:
        stop_processes(procs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
