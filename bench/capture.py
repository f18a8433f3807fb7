"""Capture benchmark: what capturing every prediction costs a replica (issue 15: at most 5% of c=64 throughput).

    python bench/capture.py            # 2 replica processes; capture off / on / off / on, 1-row requests at c=64

Capture on means FLYWHEEL_CAPTURE_SAMPLE=1 (the default): every request's ids, inputs and outputs are buffered
and written to S3 (moto on loopback) as Parquet every 5 s. Prints req/s, p99, CPU per request and how many
predictions were captured (rows in the capture files, warm-up included) and dropped (the metrics worker's
count); never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import cpu_seconds, free_port, make_bucket, metric, start_api, start_moto, stop_processes
from bench.serve import wrk

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    parser.add_argument("--processes", type=int, default=2, help="replica processes (flywheel serve --workers N)")
    parser.add_argument("--repeat", type=int, default=2, help="off/on pairs")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2

    from flywheel.data.sample_data import savings
    from flywheel.feedback.captures import read
    from flywheel.jobs.retrain import retrain
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    procs: list[subprocess.Popen[bytes]] = [moto]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-capture-"))
    try:
        s3, bucket = s3_client(), "flywheel-bench"
        make_bucket(s3, bucket)
        s3.put_object(Bucket=bucket, Key="data/1.csv", Body=savings(20_000, seed=1).to_csv(index=False).encode())
        retrain(TrainerSettings(bucket=bucket), s3)
        one = tmp / "one.json"
        row = json.loads(savings(1, seed=5).drop(columns=["monthly_savings"]).to_json(orient="records"))
        one.write_text(json.dumps({"instances": row}))
        print(f"{'capture':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} {'errors':>6} "
              f"{'captured':>9} {'dropped':>8}")  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        total = 0  # rows in every capture file so far
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                port, metrics_port = free_port(), free_port()
                api = start_api(bucket, port, args.processes, FLYWHEEL_METRICS_PORT=str(metrics_port),
                                FLYWHEEL_CAPTURE_SAMPLE="1" if mode == "on" else "0",
                                FLYWHEEL_CAPTURE_FLUSH_SECONDS="5")  # fmt: skip
                url = f"http://127.0.0.1:{port}/v1/predict"
                wrk(url, str(one), 64, 2)
                before = cpu_seconds(api.pid)
                r = wrk(url, str(one), 64, args.seconds)
                r["cpu_ms"] = (cpu_seconds(api.pid) - before) / max(r["requests"], 1) * 1000
                dropped = sum(metric(metrics_port, "flywheel_capture_dropped_predictions_total", model="savings",
                                     reason=reason) for reason in ("full", "s3", "error"))  # fmt: skip
                api.terminate()
                api.wait(timeout=60)  # shutdown writes the last captures
                table = read(s3, bucket, "savings")
                captured = (0 if table is None else table.num_rows) - total
                total += captured
                results[mode].append(r)
                print(f"{mode:8} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['cpu_ms']:10.3f} "
                      f"{r['errors']:6.0f} {captured:9.0f} {dropped:8.0f}")  # fmt: skip
        off = sum(r["rps"] for r in results["off"]) / len(results["off"])
        on = sum(r["rps"] for r in results["on"]) / len(results["on"])
        print(f"\ncapture on: {on / off - 1:+.1%} c=64 throughput vs off (target >= -5%)")
    finally:
        stop_processes(procs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
