"""`app.ui.launch.run`: Streamlit headless on the given address, stopped cleanly by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from app.ui.launch import MAIN, command
from tests.conftest import free_port
from tests.ui.conftest import ROOT, wait_for


def test_command_line_carries_the_config() -> None:
    cmd = command("0.0.0.0", 8501)
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(MAIN)]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.port"] == "8501"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.fileWatcherType"] == "none"
    assert not (ROOT / ".streamlit").exists(), "configuration lives in the flags, not in a file at the root"


def test_run_serves_the_app_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from app.ui.launch import run; raise SystemExit(run('127.0.0.1', {port}))"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
        try:
            return httpx.get(url + "/_stcore/health", timeout=1).text == "ok"
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 45, "Streamlit /_stcore/health")
        assert "<title>Streamlit</title>" in httpx.get(url + "/", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        try:
            httpx.get(url + "/_stcore/health", timeout=1)
            raise AssertionError("Streamlit still answers after its launcher exited")
        except httpx.ConnectError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
