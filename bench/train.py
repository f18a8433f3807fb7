"""Trainer benchmark: wall time and peak RSS to validate + train + publish 10k, 100k and 1M rows.

    python bench/train.py [--sizes 10000 100000 1000000]

Each size runs `flywheel retrain` logic in a fresh child process against moto's S3 server on loopback,
so peak RSS is that run's alone. Prints figures; never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import ROOT, make_bucket, start_moto

CHILD = """
import json, sys, time
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.trainer import retrain
t = time.perf_counter()
out = retrain(TrainerSettings(bucket=sys.argv[1]), s3_client())
print(json.dumps({"seconds": time.perf_counter() - t, "status": out.status, "estimator_rows": out.rows,
                  "metrics": out.metrics}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()

    from flywheel.sampledata import savings
    from flywheel.storage import s3_client

    moto, _ = start_moto()
    try:
        s3 = s3_client()
        print(f"{'rows':>10} {'csv MB':>8} {'wall s':>8} {'peak RSS MiB':>13} {'status':>9} {'holdout R2':>10}")
        for n in args.sizes:
            bucket = f"bench-train-{n}"
            make_bucket(s3, bucket)
            body = savings(n, seed=1).to_csv(index=False).encode()
            s3.put_object(Bucket=bucket, Key="data/batch.csv", Body=body)
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, bucket], cwd=ROOT, stdout=subprocess.PIPE, env=os.environ.copy()
            )
            assert proc.stdout is not None
            started = time.perf_counter()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            if status != 0:
                print(f"{n:>10} failed with status {status}")
                continue
            result = json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
            r2 = result["metrics"]["candidate"]["r2"]
            print(f"{n:>10} {len(body) / 1e6:8.1f} {result['seconds']:8.1f} {usage.ru_maxrss / 1024:13.0f} "
                  f"{result['status']:>9} {r2:10.4f}   (process wall incl. imports {wall:.1f} s)")  # fmt: skip
    finally:
        moto.terminate()
        moto.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
