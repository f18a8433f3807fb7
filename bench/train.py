"""Trainer benchmark: validation alone, a first retrain, and retrain cost as drops accumulate.

    python bench/train.py [--validate-mb 50 200] [--first-rows 1000000] [--drops 30 --drop-rows 100000]
                          [--skip validate first growth]

Every measured run is a fresh child process (peak RSS is that run's alone) against moto's S3 server on
loopback, with the trainer's defaults (estimators linear + hgb, all cores). Prints figures; never pass/fail.

Growth: each of the N drops is uploaded; at the measured drops (1st, 10th, Nth) a full retrain runs in a
child process; at the others only the ingest step runs (validate the new batch into validated/), which is
what that drop's own retrain would have left behind. So the measured retrain sees what it would in steady
state: one new batch to validate, the rest in the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._local import ROOT, make_bucket, start_moto

VALIDATE = """
import json, sys, time
from flywheel.schema import load_schema
from flywheel.data.validation import validate_stream
t = time.perf_counter()
v = validate_stream(sys.argv[1], "bench.csv", load_schema("savings"))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": v.rows}))
"""

INGEST = """
import sys, tempfile
from pathlib import Path
from flywheel.data.batch_store import BatchStore
from flywheel.data.catalog import Catalog
from flywheel.data.ingest import ingest
from flywheel.registry.manifest import sha256
from flywheel.schema import load_schema
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
s, s3 = TrainerSettings(bucket=sys.argv[1]), s3_client()
schema = load_schema(s.schema_ref)
catalog = Catalog(s3, s.bucket, f"{s.validated_prefix}{s.model_name}/", sha256(schema.model_dump_json().encode()))
store = BatchStore(s3, s.bucket, s.data_prefix, s.quarantine_prefix)
with tempfile.TemporaryDirectory() as tmp:
    got = ingest(store, catalog.load(), schema, Path(tmp),
                 max_bytes=s.batch_limit_bytes, dup_share=s.max_duplicate_fraction)
print('{"validated": %d}' % got.validated_now)
"""

RETRAIN = """
import json, sys, time
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from flywheel.jobs.retrain import retrain
t = time.perf_counter()
out = retrain(TrainerSettings(bucket=sys.argv[1], train_threads=0), s3_client())
print(json.dumps({"seconds": time.perf_counter() - t, "status": out.status, "rows": out.rows,
                  "validated": out.validated_batches, "timings": out.timings, "metrics": out.metrics}))
"""


def child(code: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run `code` in a fresh interpreter; (its JSON line, its peak RSS in MiB)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, env=os.environ)
    assert proc.stdout is not None
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode().strip().splitlines()
    if status != 0 or not out:
        raise RuntimeError(f"child failed with status {status}")
    return json.loads(out[-1]), usage.ru_maxrss / 1024


def csv_file(rows: int, seed: int, path: Path) -> Path:
    """Generate in a child: the parent stays small, so a forked child's peak RSS is its own."""
    cmd = [sys.executable, "-m", "flywheel.cli", "sample-data", "--rows", str(rows), "--seed", str(seed)]
    subprocess.run([*cmd, "--out", str(path)], cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
    return path


def bench_validate(sizes_mb: list[int], tmp: Path) -> None:
    print("\nvalidation alone (streaming, fresh process)")
    print(f"{'csv MB':>8} {'rows':>10} {'seconds':>8} {'peak RSS MiB':>13} {'peak / file':>12}")
    for mb in sizes_mb:
        rows = int(mb * 1e6 / 50.6)  # the savings CSV is ~50.6 bytes per row
        path = csv_file(rows, mb, tmp / f"v{mb}.csv")
        size = path.stat().st_size
        got, rss = child(VALIDATE, str(path))
        print(f"{size / 1e6:8.1f} {got['rows']:>10} {got['seconds']:8.1f} {rss:13.0f} {rss * 2**20 / size:11.1f}x")
        path.unlink()


def bench_first(rows: int, s3: Any, tmp: Path) -> None:
    print(f"\nfirst retrain on {rows} rows x 8 features (validate + train + publish)")
    bucket = "bench-first"
    make_bucket(s3, bucket)
    s3.upload_file(str(csv_file(rows, 1, tmp / "first.csv")), bucket, "data/batch.csv")
    got, rss = child(RETRAIN, bucket)
    r2 = got["metrics"]["candidate"]["r2"]
    print(f"  {got['seconds']:.1f} s, peak RSS {rss:.0f} MiB, {got['status']}, holdout R2 {r2:.4f}, "
          f"phases {got['timings']}")  # fmt: skip


def bench_growth(drops: int, drop_rows: int, s3: Any, tmp: Path) -> None:
    measured = sorted({1, min(10, drops), drops})
    print(f"\ngrowth: {drops} drops of {drop_rows} rows; retrain measured after drops {measured}")
    print(f"{'drop':>5} {'rows in data/':>14} {'trained rows':>13} {'validated':>10} {'seconds':>8} {'peak MiB':>9}")
    bucket = "bench-growth"
    make_bucket(s3, bucket)
    for k in range(1, drops + 1):
        s3.upload_file(str(csv_file(drop_rows, 100 + k, tmp / "drop.csv")), bucket, f"data/drop-{k:03d}.csv")
        if k in measured:
            got, rss = child(RETRAIN, bucket)
            print(f"{k:>5} {k * drop_rows:>14} {got['rows']:>13} {got['validated']:>10} {got['seconds']:8.1f} "
                  f"{rss:9.0f}")  # fmt: skip
        else:
            child(INGEST, bucket)  # what this drop's own retrain would have cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validate-mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--first-rows", type=int, default=1_000_000)
    parser.add_argument("--drops", type=int, default=30)
    parser.add_argument("--drop-rows", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["validate", "first", "growth"])
    args = parser.parse_args()

    from flywheel.storage import s3_client

    moto, _ = start_moto()
    started = time.perf_counter()
    try:
        s3 = s3_client()
        with tempfile.TemporaryDirectory() as tmp:
            if "validate" not in args.skip:
                bench_validate(args.validate_mb, Path(tmp))
            if "first" not in args.skip:
                bench_first(args.first_rows, s3, Path(tmp))
            if "growth" not in args.skip:
                bench_growth(args.drops, args.drop_rows, s3, Path(tmp))
    finally:
        moto.terminate()
        moto.wait()
    print(f"\n(total {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
