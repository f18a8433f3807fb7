"""Freshness: seconds from `flywheel drop` of a 50k-row batch to every replica serving the new version.

    python bench/freshness.py [--rows 50000] [--runs 2]

Starts `flywheel up` (no UI, no Prometheus) on free ports with a throwaway state directory, then splits
each run into queue wait (upload -> trainer starts), validate, train (incl. gate), publish (version +
alias) and reload (alias moved -> all replicas serve it). Prints figures; never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import ROOT, free_port


def served(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return int(json.loads(r.read())["model_version"])
    except (OSError, ValueError, KeyError):
        return None


def last_timing(log: Path) -> dict[str, float]:
    for line in reversed(log.read_text().splitlines()):
        if '"retrain finished"' in line:
            doc = json.loads(line)
            return {"total": doc["duration_seconds"], **doc["timings"]}
    raise RuntimeError("no retrain in the worker log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="flywheel-fresh-"))
    s3_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "FLYWHEEL_BUCKET": "flywheel-local",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "up", "--state-dir", str(state), "--s3-port", str(s3_port),
         "--api-port", str(api_port), "--replicas", str(args.replicas), "--no-ui", "--no-prometheus"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    apis = [f"http://127.0.0.1:{api_port + i}" for i in range(args.replicas)]
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
    alias_key = "models/savings/aliases/production.json"
    try:
        deadline = time.monotonic() + 300
        while not all(served(u) for u in apis):
            if time.monotonic() > deadline or up.poll() is not None:
                raise RuntimeError("flywheel up did not become ready")
            time.sleep(0.5)
        print(f"{args.replicas} replicas on v{served(apis[0])}; dropping {args.rows:,}-row drifted batches")
        print(f"{'run':>3} {'total s':>8} {'queue':>7} {'validate':>9} {'train':>7} {'publish':>8} {'reload':>7}")
        from flywheel.data.sample_data import savings

        for run in range(1, args.runs + 1):
            before = served(apis[0]) or 0
            path = state / f"drifted-{run}.csv"
            savings(args.rows, seed=100 + run, drift=0.5 + 0.25 * run).to_csv(path, index=False)
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "flywheel.cli", "drop", str(path)], cwd=ROOT, env=env,
                           check=True, capture_output=True)  # fmt: skip
            t_dropped = time.monotonic()
            t_alias = None
            while True:
                now = time.monotonic()
                if t_alias is None:
                    alias = json.loads(s3.get_object(Bucket="flywheel-local", Key=alias_key)["Body"].read())
                    if alias["version"] > before:
                        t_alias = now
                if t_alias is not None and all((served(u) or 0) > before for u in apis):
                    t_all = now
                    break
                if now - t0 > 600:
                    raise RuntimeError("no new version within 10 minutes (rejected by the gate?)")
                time.sleep(0.05)
            tm = last_timing(state / "logs" / "worker.log")
            queue = (t_alias - t_dropped) - tm["total"]
            print(f"{run:>3} {t_all - t0:8.1f} {queue:7.1f} {tm['validate']:9.1f} {tm['train']:7.1f} "
                  f"{tm['publish']:8.2f} {t_all - t_alias:7.1f}   (upload {t_dropped - t0:.1f} s)")  # fmt: skip
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
