"""UI fixtures: Streamlit's AppTest on app/ui/main.py, moto's S3, and a real `flywheel serve` on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from flywheel.access.ui_identity import create_signer, mint_token
from flywheel.jobs.retrain import Outcome, retrain
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import csv_bytes, wait_for

__all__ = ["wait_for"]  # re-exported for the UI tests

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "app" / "ui" / "main.py"


@pytest.fixture(autouse=True)
def _ui_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh process-wide Streamlit caches (settings, clients, registry reads) and no API unless a test
    starts one: the URL points at a closed loopback port."""
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("FLYWHEEL_API_URL", f"http://127.0.0.1:{free_port()}")
    for name in [n for n in os.environ if n.startswith("FLYWHEEL_UI_")]:
        monkeypatch.delenv(name)  # viewer-only unless a test signs in
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@dataclass
class Signer:
    """The UI's local identity signer (FLYWHEEL_UI_AUTH=local-token), as `flywheel up` makes it."""

    private: Path
    public: Path

    def token(self, role: str, name: str = "") -> str:
        return mint_token(self.private, role, name or f"test-{role}")


@pytest.fixture
def signer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signer:
    """Local-token sign-in on, with a fresh key pair; open_app(identity=signer.token(...)) signs in."""
    private, public = create_signer(tmp_path / "identity")
    monkeypatch.setenv("FLYWHEEL_UI_AUTH", "local-token")
    monkeypatch.setenv("FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE", str(public))
    st.cache_resource.clear()
    return Signer(private, public)


def open_app(page: str | None = None, model: str | None = None, identity: str | None = None) -> AppTest:
    """Run app/ui/main.py (the Predict page), then switch to views/<page>.py when given; `model` is the
    `?model=` and `identity` the `?identity=` (a local sign-in token) of the link that opened the app."""
    at = AppTest.from_file(MAIN, default_timeout=30)
    if model:
        at.query_params["model"] = model
    if identity:
        at.query_params["identity"] = identity
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    """Bodies of one kind of element (success, error, warning, info, caption, markdown, toast)."""
    return [str(e.value) for e in getattr(at, kind)]


def pick(at: AppTest, model: str) -> AppTest:
    """Choose `model` in the sidebar's picker and rerun."""
    at.selectbox(key="model").select(model).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def train(stack: Stack, seed: int, rows: int = 600, model: str = "", **overrides: Any) -> Outcome:
    """Put a demo batch for `model` under data/<model>/ (no model: the default one's, directly under data/ as
    in the old layout) and run the real trainer on that model (a linear model: fast)."""
    key = f"data/{model}/batch-{seed}.csv" if model else f"data/batch-{seed}.csv"
    stack.put(key, csv_bytes(rows, seed=seed, dataset=model or "savings"))
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, **overrides)
    outcome = retrain(settings, s3_client(), model=model or None)
    assert outcome.version is not None, outcome
    return outcome


@dataclass
class Api:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def version(self) -> int | None:
        """The version /readyz reports (None when not ready or not reachable)."""
        try:
            r = loopback.get(self.url + "/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return r.json().get("model_version") if r.status_code == 200 else None

    def wait_version(self, version: int, timeout: float = 30) -> None:
        wait_for(lambda: self._running() and self.version() == version, timeout, f"API serving v{version}")

    def wait_alive(self, timeout: float = 30) -> None:
        def alive() -> bool:
            try:
                return self._running() and loopback.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(alive, timeout, "API /healthz")

    def _running(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        return True


@pytest.fixture
def api(stack: Stack, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """A real `flywheel serve` replica on the test's bucket, starting; the UI's FLYWHEEL_API_URL points at it."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "FLYWHEEL_BUCKET": stack.bucket,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "FLYWHEEL_POLL_INTERVAL_SECONDS": "0.6",
        "FLYWHEEL_API_AUTH": "off",  # these tests are about the UI; API keys: tests/integration/test_api_access.py
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Api(f"http://127.0.0.1:{port}", proc, log)
    monkeypatch.setenv("FLYWHEEL_API_URL", server.url)
    try:
        yield server  # still starting: tests train meanwhile, then wait_version() or wait_alive()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
