"""The UI once in a real browser: Debian's headless Chromium, driven by Playwright, against a running UI
and API. The screenshot is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Stack, free_port
from tests.integration.conftest import Replica, get_status, train, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no background traffic: the machine has no network beyond loopback
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_prediction_in_a_real_browser(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], tmp_path: Path
) -> None:
    assert os.path.exists(CHROMIUM), "Debian's chromium is required (make test installs it as root)"
    from playwright.sync_api import sync_playwright

    version = train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: get_status(api.url + "/readyz") == 200, 30, what="api ready")
    port = free_port()
    env = {**os.environ, "FLYWHEEL_API_URL": api.url, "FLYWHEEL_BUCKET": stack.bucket,
           "AWS_ENDPOINT_URL": moto_endpoint}  # fmt: skip
    ui = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=(tmp_path / "ui.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get_status(url + "/_stcore/health") == 200, 60, what="ui health")
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Predict").click(timeout=60_000)
            result = page.get_by_text(f"v{version} predicts")
            result.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "ui-prediction.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
        assert f"v{version} predicts" in text
        assert "income" in text and "region" in text
        assert (ARTIFACTS / "ui-prediction.png").stat().st_size > 10_000
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
