"""`flywheel up` survives what users do to it: a restart after `models add`, a second start on the same state,
the CLI from another folder, SIGTERM while it starts, SIGKILL."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.stack_harness import ROOT, Up, port_free
from tests.helpers import eventually
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.e2e


def _ports(up: Up) -> list[int]:
    return [up.s3_port, up.api_port, up.api_port + 1, up.metrics_port, up.metrics_port + 1]


def _bucket_keys(up: Up) -> dict[str, str]:
    s3 = __import__("boto3").client(
        "s3", endpoint_url=up.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip
    pages = s3.get_paginator("list_object_versions").paginate(Bucket="flywheel-local")
    return {v["Key"] + "@" + v["VersionId"]: v["ETag"] for p in pages for v in p.get("Versions", [])}


def test_a_restart_a_second_start_and_the_cli_from_anywhere(up: Up, tmp_path: Path) -> None:
    up.start()
    # "ready in" is the whole wait since the command, not since its last step (it said 12 s after 51 s)
    printed = next(float(m[1]) for line in up.lines if (m := re.search(r"ready in (\d+) s", line)))
    assert printed >= up.ready_after - 3, (printed, up.ready_after)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)

    # the CLI finds the running stack from any folder, without FLYWHEEL_STATE_DIR (this user's running stacks)
    listing = json.loads(up.cli("models", "--model", "savings", "--json", cwd=elsewhere, state_dir=False))
    assert [m["version"] for m in listing] == [1]

    # a second `up` on the same state: refused in one line naming the running stack; nothing of it touched
    objects, logs = _bucket_keys(up), {p.name: p.stat().st_size for p in (up.state / "logs").glob("*.log")}
    stack_json = (up.state / "stack.json").read_text()
    second = subprocess.run(up.argv(), cwd=ROOT, env=up.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    errors = [line for line in second.stdout.splitlines() if "error" in line]
    assert len(errors) == 1 and "already running" in errors[0] and str(up.state) in errors[0], second.stdout
    assert "Traceback" not in second.stdout + second.stderr
    assert (up.state / "stack.json").read_text() == stack_json  # not removed, not rewritten
    assert _bucket_keys(up) == objects  # nothing re-uploaded, no retrain started
    assert all((up.state / "logs" / n).stat().st_size >= size for n, size in logs.items())  # no log truncated
    assert up.served() == [1, 1]
    assert up.cli("models", "--json", cwd=elsewhere, state_dir=False)

    # a model registered without any data yet: the next start serves the others and lists it, never waits for it
    up.cli("models", "add", "fraud", "--schema", "churn")
    up.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert up.proc.wait(timeout=150) == 0  # type: ignore[union-attr]
    started = time.monotonic()
    up.start()
    assert time.monotonic() - started < 120
    banner = "\n".join(up.lines)
    assert "fraud        registered, no version yet" in banner, banner
    assert "savings      v1 in production" in banner
    assert up.served() == [1, 1]

    # SIGKILL: the children die with `up` (the kernel signals them), every port is free again
    up.proc.kill()  # type: ignore[union-attr]
    up.proc.wait()  # type: ignore[union-attr]
    wait_for(lambda: all(port_free(p) for p in _ports(up)), 60, interval=0.5, what="every port free after SIGKILL")
    # and its record no longer counts: the CLI from elsewhere says there is no stack, in one line
    out = up.run_cli("models", cwd=elsewhere, state_dir=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no running local stack" in out.stderr


def test_sigterm_while_starting_stops_everything(up: Up) -> None:
    up.start(wait=False)  # a fresh state: the seed batches train while `up` waits
    eventually(lambda: list(up.lines), lambda lines: any("5/5" in line for line in lines), 120,
               what="up waiting for the seed batches")  # fmt: skip
    up.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert up.proc.wait(timeout=90) == 0, "\n".join(up.lines)  # type: ignore[union-attr]
    wait_for(lambda: all(port_free(p) for p in _ports(up)), 30, interval=0.5, what="every port free")
    assert not (up.state / "stack.json").exists()


def test_a_port_in_use_is_named_before_anything_starts(up: Up) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", up.api_port + 1))
        taken.listen()
        out = subprocess.run(up.argv(), cwd=ROOT, env=up.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{up.api_port + 1} (API replica 2)" in out.stdout and "in use" in out.stdout, out.stdout
    assert not (up.state / "logs").exists()  # nothing was started


def test_the_cli_never_prints_a_traceback_for_configuration(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    cmd = [sys.executable, "-m", "flywheel.cli"]
    for args in (["models"], ["models", "--bucket", "somewhere"], ["rollback", "--bucket", "b"]):
        out = subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)
