"""`flywheel up` as a user runs it: a subprocess on free ports, driven with the CLI and HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests import loopback
from tests.conftest import free_port, free_port_range
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Up:
    """`mlflow`: start the embedded MLflow (or use MLFLOW_TRACKING_URI when a test sets it in `env`); off by default
    (`--no-mlflow`: ~7 s less to start) except where a test is about it, or the README's walkthrough."""

    def __init__(self, state: Path, mlflow: bool = False) -> None:
        self.state, self.mlflow = state, mlflow
        self.s3_port, self.ui_port, self.mlflow_port = free_port(), free_port(), free_port()
        # two replicas on consecutive ports (and their metrics ports): a range no other worker's free_port() takes
        self.api_port = free_port_range(2)
        self.metrics_port = free_port_range(2)
        while {self.metrics_port, self.metrics_port + 1} & {self.api_port, self.api_port + 1}:
            self.metrics_port = free_port_range(2)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},  # none of this shell's MLflow
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "FLYWHEEL_BUCKET": "flywheel-local",
            # this test's record of running stacks, not the user's (the CLI finds stacks from any folder by it)
            "XDG_STATE_HOME": str(state.parent / "xdg"),
            # the stack's trainer: both estimators still compete, on two CV folds instead of three (half the fitting
            # of every retrain; these tests are about the loop, not model selection)
            "FLYWHEEL_CV_FOLDS": "2",
        }
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.ready_after = 0.0

    @property
    def auth(self) -> dict[str, str]:
        """The client key `flywheel up` made (the replicas check keys as in the cloud)."""
        return {"Authorization": f"Bearer {(self.state / 'api' / 'client.key').read_text().strip()}"}

    @property
    def mlflow_url(self) -> str:
        """The embedded MLflow's (with `mlflow=True` and no MLFLOW_TRACKING_URI of the test's own)."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def apis(self) -> list[str]:
        return [f"http://127.0.0.1:{self.api_port + i}" for i in range(2)]

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "flywheel.cli", "up", "--state-dir", str(self.state),
            "--s3-port", str(self.s3_port), "--api-port", str(self.api_port), "--ui-port", str(self.ui_port),
            "--metrics-port", str(self.metrics_port), "--mlflow-port", str(self.mlflow_port), "--no-prometheus",
            "--no-ui", *([] if self.mlflow else ["--no-mlflow"]),
        ]  # fmt: skip

    def start(self, wait: bool = True) -> None:
        self.lines = []
        launched = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not wait:
            return
        wait_for(
            lambda: any("Flywheel is running locally" in line for line in self.lines) or self._dead(),
            240,
            interval=0.5,
            what="flywheel up ready",
        )
        assert not self._dead(), "\n".join(self.lines)
        self.ready_after = time.monotonic() - launched  # what the user waited, from the command to the banner

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            return self.proc.wait(timeout=150)  # one 25 s grace for the processes, the state saved, then the S3
        except subprocess.TimeoutExpired:
            raise AssertionError("flywheel up did not stop in 150 s; it printed:\n" + "\n".join(self.lines)) from None

    def cli(self, *args: str, cwd: Path = ROOT, state_dir: bool = True) -> str:
        """The CLI as a user runs it in another terminal: nothing exported, it finds the stack by itself."""
        out = self.run_cli(*args, cwd=cwd, state_dir=state_dir)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def run_cli(self, *args: str, cwd: Path = ROOT, state_dir: bool = True) -> subprocess.CompletedProcess[str]:
        bare = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYWHEEL_", "MLFLOW_"))}
        env = {**bare, "XDG_STATE_HOME": self.env["XDG_STATE_HOME"]}
        if state_dir:
            env["FLYWHEEL_STATE_DIR"] = str(self.state)
        return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def served(self) -> list[int | None]:
        versions = []
        for url in self.apis:
            try:
                r = loopback.get(url + "/readyz", timeout=2, headers=self.auth)  # which version: for a key only
                versions.append(r.json().get("model_version") if r.status_code == 200 else None)
            except httpx.HTTPError:
                versions.append(None)
        return versions


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` (bound as the servers bind: TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
