"""Bench helpers: a moto server, a trained registry and subprocesses on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60, ok: Callable[[int], bool] = lambda c: c == 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if ok(r.status):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def fake_aws_env(endpoint: str) -> None:
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/moto-api/", ok=lambda c: c < 500)
    fake_aws_env(endpoint)
    return proc, endpoint


def make_bucket(s3: object, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    s3.put_bucket_versioning(  # type: ignore[attr-defined]
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )


def train_model(s3: Any, bucket: str, name: str, frame: Any, estimators: str = "linear,hgb") -> int:
    """Register `name` (schema = the sample dataset's), upload `frame` under data/<name>/, retrain it: the version."""
    from flywheel.jobs.retrain import retrain
    from flywheel.registry import registrations
    from flywheel.schema import load_schema
    from flywheel.settings import TrainerSettings

    dataset = "churn" if "churned" in frame.columns else "savings"
    registrations.register(s3, bucket, name, load_schema(dataset))
    key = f"data/{name}/batch-{len(s3.list_objects_v2(Bucket=bucket, Prefix=f'data/{name}/').get('Contents', []))}.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=frame.to_csv(index=False).encode())
    settings = TrainerSettings(bucket=bucket, model_name=name, schema_ref=dataset, estimators=estimators,
                               gate_tolerance=1.0)  # fmt: skip
    outcome = retrain(settings, s3)
    if outcome.version is None:
        raise RuntimeError(f"{name}: no version ({outcome.reasons})")
    return outcome.version


def api_key_env(tmp: Path) -> dict[str, str]:
    """API keys on, as in production: one client key in a keys file (0600). wrk sends it (open_loop.auth_lua)."""
    from flywheel.access.api_keys import dump, new_key

    key, record = new_key("bench", "client", "bench")
    path = tmp / "api-keys.json"
    path.write_text(dump([record]))
    path.chmod(0o600)
    os.environ["BENCH_API_KEY"] = key
    return {"FLYWHEEL_API_AUTH": "api-keys", "FLYWHEEL_API_KEYS_FILE": str(path)}


def start_api(bucket: str, port: int, workers: int = 1, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env={**os.environ, "FLYWHEEL_BUCKET": bucket, "FLYWHEEL_API_AUTH": "off", **env},  # loopback bench
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(root: int) -> float:
    """User + system CPU time of process `root` and its descendants (every thread; uvicorn's workers), seconds."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0.0
    for pid in tree:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of the line)
    return total


def metric(port: int, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def stop_processes(procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    """Stop every server this run started and remove its files."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:  # MLServer's workers can outlive a SIGTERM
            p.kill()
            p.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)
