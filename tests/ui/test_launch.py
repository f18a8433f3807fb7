"""`app.ui.launch.run`: Streamlit headless on the given address, stopped cleanly by SIGTERM; in oidc mode, with
Streamlit's [auth] secrets written privately from Secrets Manager (moto's server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from app.ui.launch import MAIN, SignInConfigError, command, oidc_secrets_file
from tests import loopback
from tests.conftest import free_port
from tests.ui.conftest import ROOT, wait_for


def test_command_line_carries_the_config() -> None:
    cmd = command("0.0.0.0", 8501)
    assert cmd[:5] == [sys.executable, "-m", "app.ui.streamlit_main", "run", str(MAIN)]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.port"] == "8501"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.fileWatcherType"] == "none"
    assert not (ROOT / ".streamlit").exists(), "configuration lives in the flags, not in a file at the root"


def _wait_healthy(proc: subprocess.Popen[bytes], url: str) -> None:
    """Until Streamlit at `url` answers its health check (failing with its output if the launcher died)."""

    def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
        try:
            return loopback.get(url + "/_stcore/health", timeout=1).text == "ok"
        except httpx.HTTPError:
            return False

    wait_for(healthy, 90, "Streamlit /_stcore/health")


def test_run_serves_the_app_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from app.ui.launch import run; raise SystemExit(run('127.0.0.1', {port}))"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    try:
        _wait_healthy(proc, url)
        assert "<title>Streamlit</title>" in loopback.get(url + "/", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        try:
            loopback.get(url + "/_stcore/health", timeout=1)
            raise AssertionError("Streamlit still answers after its launcher exited")
        except httpx.ConnectError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- OIDC sign-in: Streamlit's [auth] secrets from Secrets Manager (moto's server) ------------------------------
OIDC = {
    "client_id": "flywheel-ui",
    "client_secret": "s3cr3t-client",
    "redirect_uri": "https://ui.example.com/oauth2callback",
    "server_metadata_url": "https://cognito-idp.us-east-1.amazonaws.com/pool/.well-known/openid-configuration",
}
COOKIE = "c00kie-secret-" + "x" * 32


@pytest.fixture
def oidc_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """oidc mode with both secrets in moto's Secrets Manager; returns the client."""
    sm = boto3.client("secretsmanager")
    suffix = os.urandom(4).hex()
    oidc_arn = sm.create_secret(Name=f"flywheel/ui-oidc-{suffix}", SecretString=json.dumps(OIDC))["ARN"]
    sm.create_secret(Name=f"flywheel/ui-cookie-{suffix}", SecretString=COOKIE)
    monkeypatch.setenv("FLYWHEEL_UI_AUTH", "oidc")
    monkeypatch.setenv("FLYWHEEL_UI_OIDC_SECRET_ID", oidc_arn)  # an ARN or a name, as Secrets Manager takes
    monkeypatch.setenv("FLYWHEEL_UI_COOKIE_SECRET_ID", f"flywheel/ui-cookie-{suffix}")
    return sm


def test_oidc_secrets_are_written_privately_for_streamlit(oidc_env: Any) -> None:
    path = oidc_secrets_file()
    assert path is not None
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert not str(path).startswith(str(ROOT)), "never inside the checkout"
        assert tomllib.loads(path.read_text()) == {"auth": {**OIDC, "cookie_secret": COOKIE}}
        flags = command("127.0.0.1", 8501, path)
        assert flags[flags.index("--secrets.files") + 1] == str(path)
    finally:
        shutil.rmtree(path.parent)


def test_other_modes_write_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_UI_AUTH", raising=False)
    assert oidc_secrets_file() is None
    assert "--secrets.files" not in command("127.0.0.1", 8501)


@pytest.mark.parametrize(
    ("change", "variable", "why"),
    [
        (
            {"FLYWHEEL_UI_COOKIE_SECRET_ID": "flywheel/no-such-secret"},
            "FLYWHEEL_UI_COOKIE_SECRET_ID",
            "ResourceNotFound",
        ),
        ({"FLYWHEEL_UI_OIDC_SECRET_ID": "flywheel/no-such-secret"}, "FLYWHEEL_UI_OIDC_SECRET_ID", "ResourceNotFound"),
        ({"FLYWHEEL_UI_COOKIE_SECRET_ID": ""}, "FLYWHEEL_UI_COOKIE_SECRET_ID", "needs"),
    ],
)
def test_a_missing_secret_names_its_variable(
    oidc_env: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, str], variable: str, why: str
) -> None:
    for k, v in change.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SignInConfigError) as e:
        oidc_secrets_file()
    assert variable in e.value.message and why in e.value.message
    assert COOKIE not in e.value.message and OIDC["client_secret"] not in e.value.message


def test_an_incomplete_oidc_secret_names_the_missing_fields(oidc_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "flywheel/ui-oidc-partial-" + os.urandom(4).hex()
    oidc_env.create_secret(Name=name, SecretString=json.dumps({"client_id": "x", "client_secret": "s3cr3t-client"}))
    monkeypatch.setenv("FLYWHEEL_UI_OIDC_SECRET_ID", name)
    with pytest.raises(SignInConfigError, match="lacks server_metadata_url, redirect_uri") as e:
        oidc_secrets_file()
    assert "s3cr3t-client" not in e.value.message


def test_streamlit_starts_with_the_oidc_secrets_and_the_folder_goes_with_it(oidc_env: Any, tmp_path: Path) -> None:
    port = free_port()
    code = f"from app.ui.launch import run; raise SystemExit(run('127.0.0.1', {port}))"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the private folder is made here, where the test can see it
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"

    try:
        _wait_healthy(proc, url)
        [secrets] = tmp_path.glob("flywheel-ui-secrets-*/secrets.toml")
        assert "[auth]" in secrets.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert COOKIE not in output and OIDC["client_secret"] not in output, "secret values are never printed"
        assert not secrets.parent.exists(), "the private folder is removed when Streamlit exits"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
