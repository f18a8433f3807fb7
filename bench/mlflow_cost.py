"""What the MLflow mirror costs the trainer image: installed size and cold-start imports, before and after.

    python bench/mlflow_cost.py [--old-ref 05858d2] [--runs 7] [--workdir DIR]

Without Docker, the image's dependency layer is approximated by installing each hashed lock
(lambdas/trainer/requirements.lock at `--old-ref` and in the working tree) into a `--target` folder as the
Dockerfile does (`--only-binary=:all: --require-hashes`, bytecode compiled as pip does by default). The base
image (python:3.11-slim) and Flywheel's own code are the same on both sides and left out.

Cold start: fresh interpreters (`python -S -P`: only the target folder and the source tree are importable)
import `lambdas.trainer.handler` with the mirror off (MLFLOW_TRACKING_URI unset: mlflow is never imported), old
code on the old folder and new code on the new folder; then, on the new side, what the mirror adds when it is on:
`mlflow.tracking` (every pass) and `mlflow.sklearn` (a retrain logging its model), imported after the handler as
the mirror does. Medians (and minima: the least disturbed run) of `--runs`, old and new in turn, after one warm-up
run (the image has its bytecode compiled). Prints figures; never pass/fail.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "lambdas/trainer/requirements.lock"
HANDLER = "lambdas.trainer.handler"
#: Prints, in one process: seconds to import mlflow.tracking, then mlflow.sklearn, and max RSS (MiB) before/after.
MIRROR_PROBE = f"""
import json, resource, time
import {HANDLER}
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); import mlflow.tracking; t1 = time.perf_counter(); import mlflow.sklearn
t2 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"tracking": t1 - t0, "sklearn": t2 - t1, "rss_before": rss0 / 1024, "rss_after": rss1 / 1024}}))
"""


def install(lock: Path, target: Path) -> None:
    """The lock into `target`, as the Dockerfile installs it (skipped when already there)."""
    if (target / ".complete").exists():
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-r", str(lock), "--target", str(target)]  # fmt: skip
    subprocess.run(cmd, check=True)
    (target / ".complete").write_text("")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def distributions(site: Path) -> dict[str, int]:
    """{distribution name: bytes of the files its RECORD lists} for every distribution in `site`."""
    out = {}
    for info in site.glob("*.dist-info"):
        name = info.name.removesuffix(".dist-info").rpartition("-")[0].lower().replace("_", "-")
        total = 0
        with (info / "RECORD").open(newline="") as f:
            for row in csv.reader(f):
                path = site / row[0] if row else None
                if path is not None and path.is_file():
                    total += path.stat().st_size
        out[name] = total
    return out


def export_source(ref: str, dest: Path) -> None:
    """The code (flywheel/, lambdas/) at `ref`, written out with `git archive` (the work tree is not touched)."""
    if (dest / "lambdas").exists():
        return
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "flywheel", "lambdas"], check=True,
                          capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")


def python(site: Path, source: Path, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """A fresh `python -S -P` that sees only `site` and `source` (not the working directory), mirror off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{source}", POWERTOOLS_TRACE_DISABLED="true", AWS_REGION="us-east-1")
    return subprocess.run([sys.executable, "-S", "-P", *flags, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=site)  # fmt: skip


def wall_seconds(site: Path, source: Path) -> float:
    started = time.perf_counter()
    python(site, source, f"import {HANDLER}")
    return time.perf_counter() - started


def importtime(site: Path, source: Path) -> tuple[float, dict[str, float]]:
    """Cumulative `-X importtime` of the handler (seconds), and {module: its own import seconds}."""
    modules = {}
    for line in python(site, source, f"import {HANDLER}", "-X", "importtime").stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, cumulative, name = line.removeprefix("import time:").split("|")
            modules[name.strip()] = int(own) / 1e6
            if name.strip() == HANDLER:
                total = int(cumulative) / 1e6
    return total, modules


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-ref", default="05858d2", help="the commit before mlflow-skinny joined the lock")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep the installs here (default: a new temporary folder)")
    parser.add_argument("--top", type=int, default=12, help="biggest added or grown distributions to list")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="flywheel-mlflow-cost-"))
    work.mkdir(parents=True, exist_ok=True)

    old_lock = work / "old.lock"
    old_lock.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.old_ref}:{LOCK}"], check=True,
                                        capture_output=True).stdout)  # fmt: skip
    sides = {"old": (old_lock, work / "old-site", work / "old-src"), "new": (ROOT / LOCK, work / "new-site", ROOT)}
    export_source(args.old_ref, work / "old-src")
    for lock, site, _ in sides.values():
        install(lock, site)

    print(f"== image dependency layer (pip --target; {work})")
    size = {name: folder_bytes(site) for name, (_, site, _) in sides.items()}
    for name, total in size.items():
        print(f"{name:>4}: {total / 2**20:8.1f} MiB")
    print(f"diff: {(size['new'] - size['old']) / 2**20:+8.1f} MiB")
    old, new = distributions(sides["old"][1]), distributions(sides["new"][1])
    grown = sorted(((new[d] - old.get(d, 0), d) for d in new), reverse=True)
    print(f"biggest added (+) or grown distributions (MiB): {', '.join(sorted(set(new) - set(old)))} are new")
    for delta, d in grown[: args.top]:
        print(f"  {d:<36} {delta / 2**20:+7.1f}{'  (new)' if d not in old else ''}")
    for d in sorted(set(old) - set(new)):
        print(f"  {d:<36} {-old[d] / 2**20:+7.1f}  (removed)")
    for d in sorted(d for d in new if d in old and new[d] < old[d] and (old[d] - new[d]) > 2**20):
        print(f"  {d:<36} {(new[d] - old[d]) / 2**20:+7.1f}  (shrank)")

    print(f"\n== cold start: import {HANDLER}, mirror off (median and minimum of {args.runs}, after a warm-up)")
    walls: dict[str, list[float]] = {name: [] for name in sides}
    timed: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in sides}
    for _, site, source in sides.values():
        wall_seconds(site, source)  # warm-up: bytecode of the source tree, page cache
    for _ in range(args.runs):  # old and new in turn, so that a busy machine slows both alike
        for name, (_, site, source) in sides.items():
            walls[name].append(wall_seconds(site, source))
            timed[name].append(importtime(site, source))
    for name in sides:
        mlflow = any(m.startswith("mlflow") for _, modules in timed[name] for m in modules)
        imported = "imported mlflow!" if mlflow else "no mlflow module imported"
        times = [t for t, _ in timed[name]]
        print(f"{name:>4}: wall {statistics.median(walls[name]) * 1000:6.0f} ms (min {min(walls[name]) * 1000:.0f})"
              f"   -X importtime {statistics.median(times) * 1000:6.0f} ms (min {min(times) * 1000:.0f}); "
              f"{imported}")  # fmt: skip
    for key, got in (("wall", walls), ("importtime", {k: [t for t, _ in v] for k, v in timed.items()})):
        median = statistics.median(got["new"]) - statistics.median(got["old"])
        least = min(got["new"]) - min(got["old"])
        print(f"diff: {key} {median * 1000:+.0f} ms (medians), {least * 1000:+.0f} ms (minima)")
    # what does not depend on a busy machine: which modules the new side imports that the old did not
    (_, old_modules), (_, new_modules) = (min(timed[name], key=lambda t: t[0]) for name in ("old", "new"))
    added = {m: t for m, t in new_modules.items() if m not in old_modules}
    dropped = [m for m in old_modules if m not in new_modules]
    own = sum(added.values()) * 1000
    print(f"modules: {len(old_modules)} -> {len(new_modules)}; {len(added)} added ({own:.1f} ms of their own import "
          f"time: {', '.join(sorted(added)) or '-'}); {len(dropped)} no longer imported")  # fmt: skip

    _, site, source = sides["new"]
    print(f"\n== mirror on: imports after the handler (new side, median of {args.runs})")
    python(site, source, MIRROR_PROBE)
    probes = [json.loads(python(site, source, MIRROR_PROBE).stdout) for _ in range(args.runs)]
    for key, label in (("tracking", "mlflow.tracking (every pass)"), ("sklearn", "mlflow.sklearn (a retrain)")):
        took = [p[key] for p in probes]
        print(f"  {label:<32} {statistics.median(took) * 1000:7.0f} ms (min {min(took) * 1000:.0f})")
    before, after = (statistics.median(p[k] for p in probes) for k in ("rss_before", "rss_after"))
    print(f"  max RSS: {before:.0f} MiB after the handler, {after:.0f} MiB with both ({after - before:+.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
