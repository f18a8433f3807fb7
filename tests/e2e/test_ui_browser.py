"""The UI in a real browser: Debian's headless Chromium, driven by Playwright, against a running UI and API: a
prediction, and sign-in with the operator and viewer URLs of `flywheel up`. Screenshots are kept in
test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.local.identity import local_identity
from tests.conftest import Stack, free_port
from tests.helpers import csv_bytes
from tests.integration.conftest import Replica, get_status, train, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no background traffic: the machine has no network beyond loopback
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@contextmanager
def ui_process(tmp_path: Path, **env: str) -> Iterator[str]:
    """`flywheel ui` on a free loopback port with `env`; yields its URL once healthy, stops it after."""
    port = free_port()
    log = tmp_path / f"ui-{port}.log"
    ui = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get_status(url + "/_stcore/health") == 200, 60, what="ui health")
        yield url
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def test_prediction_in_a_real_browser(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], tmp_path: Path
) -> None:
    assert os.path.exists(CHROMIUM), "Debian's chromium is required (make test installs it as root)"
    from playwright.sync_api import sync_playwright

    version = train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: get_status(api.url + "/readyz") == 200, 60, what="api ready")
    env = {"FLYWHEEL_API_URL": api.url, "FLYWHEEL_BUCKET": stack.bucket, "AWS_ENDPOINT_URL": moto_endpoint}
    with ui_process(tmp_path, **env) as url:
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Predict").click(timeout=60_000)
            result = page.get_by_text(f"v{version} predicts")
            result.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "ui-prediction.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
    assert f"v{version} predicts" in text
    assert "income" in text and "region" in text
    assert (ARTIFACTS / "ui-prediction.png").stat().st_size > 10_000


def test_sign_in_as_operator_uploads_and_a_viewer_sees_no_operator_action(
    stack: Stack, moto_endpoint: str, tmp_path: Path
) -> None:
    """As under `flywheel up`: local-token sign-in, the operator and viewer URLs it prints."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is required (make test installs it as root)"
    from playwright.sync_api import expect, sync_playwright

    train(stack)
    signer = local_identity(tmp_path / "state")
    env = {"FLYWHEEL_BUCKET": stack.bucket, "AWS_ENDPOINT_URL": moto_endpoint, **signer.ui_env()}
    batch = tmp_path / "from the browser.csv"
    batch.write_bytes(csv_bytes(40, seed=9))
    with ui_process(tmp_path, **env) as url:
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            operator = browser.new_page(viewport={"width": 1280, "height": 1400})
            operator.goto(signer.sign_in_url(url, "operator"), wait_until="domcontentloaded")
            operator.get_by_text("Signed in: local-operator").wait_for(timeout=60_000)
            expect(operator).not_to_have_url(re.compile("identity="), timeout=30_000)  # the token left the URL
            operator.get_by_role("link", name="Data").click()
            operator.locator("input[type=file]").set_input_files(str(batch))
            # the file has reached the server (the uploader lists it) before the form is submitted
            operator.get_by_text(batch.name).first.wait_for(timeout=60_000)
            operator.get_by_test_id("stBaseButton-secondaryFormSubmit").click()  # the form's Upload
            operator.get_by_text("by local-operator (operator, local-token)").wait_for(timeout=60_000)
            operator.screenshot(path=str(ARTIFACTS / "ui-operator-upload.png"), full_page=True)

            viewer = browser.new_context().new_page()  # another browser: its own session
            viewer.goto(signer.sign_in_url(url, "viewer"), wait_until="domcontentloaded")
            viewer.get_by_text("Signed in: local-viewer").wait_for(timeout=60_000)
            viewer.get_by_role("link", name="Models").click()
            viewer.get_by_text("are for operators").wait_for(timeout=60_000)
            models_buttons = viewer.get_by_role("button").all_inner_texts()
            viewer.get_by_role("link", name="Data").click()
            viewer.get_by_text("is for operators").wait_for(timeout=60_000)
            data_buttons = viewer.get_by_role("button").all_inner_texts()
            file_inputs = viewer.locator("input[type=file]").count()

            stranger = browser.new_context().new_page()
            stranger.goto(url, wait_until="domcontentloaded")
            stranger.get_by_text("Not signed in").wait_for(timeout=60_000)
            browser.close()
    meta = stack.s3.head_object(Bucket=stack.bucket, Key="data/savings/from-the-browser.csv")["Metadata"]
    assert meta["uploaded-by"] == "local-operator (operator, local-token)"
    assert not [b for b in models_buttons if "Promote" in b or "Roll back" in b], models_buttons
    assert not [b for b in data_buttons if "Upload" in b] and file_inputs == 0, data_buttons
