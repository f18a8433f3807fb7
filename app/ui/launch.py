"""Start the Streamlit UI headless (`flywheel ui`, the container's second command).

Streamlit runs as a child process through its own CLI (the stable interface); its configuration is the
flags below, so no `.streamlit/config.toml` is needed anywhere. SIGTERM and SIGINT are passed on to the
child, whose exit status becomes ours.

With FLYWHEEL_UI_AUTH=oidc, Streamlit's sign-in needs an `[auth]` section in a secrets.toml: it is written at
start from two Secrets Manager secrets (FLYWHEEL_UI_OIDC_SECRET_ID, FLYWHEEL_UI_COOKIE_SECRET_ID) into a private
temporary folder (0700, file 0600) that `--secrets.files` points at, and removed when Streamlit exits. Secret
values are never logged or printed; errors name the variable and the secret id only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from flywheel.errors import FlywheelError

MAIN = Path(__file__).resolve().with_name("main.py")

# The upload widget caps uploads at 256 MiB; the trainer takes at most FLYWHEEL_MAX_BATCH_BYTES (1/16 of its memory,
# 188 MiB on the default Lambda) and quarantines a bigger file with a "size" report naming the limit.
MAX_UPLOAD_MB = 256


OIDC_KEYS = ("client_id", "client_secret", "server_metadata_url", "redirect_uri")


class SignInConfigError(FlywheelError):
    """The OIDC sign-in cannot be configured: a secret is missing or malformed (named by its variable)."""


def _secret(sm: Any, secret_id: str, variable: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = sm.get_secret_value(SecretId=secret_id).get("SecretString")
    except (ClientError, BotoCoreError) as e:
        code = e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else type(e).__name__
        raise SignInConfigError(f"{variable}: cannot read secret {secret_id!r} ({code})") from e
    if not value:
        raise SignInConfigError(f"{variable}: secret {secret_id!r} has no string value")
    return str(value)


def auth_secrets_toml(oidc_secret_id: str, cookie_secret_id: str, sm: Any) -> str:
    """Streamlit's `[auth]` section from the two secrets (SignInConfigError naming the variable otherwise)."""
    raw = _secret(sm, oidc_secret_id, "FLYWHEEL_UI_OIDC_SECRET_ID")
    try:
        oidc = json.loads(raw)
    except ValueError as e:
        raise SignInConfigError(f"FLYWHEEL_UI_OIDC_SECRET_ID: secret {oidc_secret_id!r} is not JSON") from e
    missing = [k for k in OIDC_KEYS if not isinstance(oidc, dict) or not oidc.get(k)]
    if missing:
        raise SignInConfigError(f"FLYWHEEL_UI_OIDC_SECRET_ID: secret {oidc_secret_id!r} lacks {', '.join(missing)}")
    cookie = _secret(sm, cookie_secret_id, "FLYWHEEL_UI_COOKIE_SECRET_ID")
    values = {**{k: str(oidc[k]) for k in OIDC_KEYS}, "cookie_secret": cookie}
    # a JSON string is a valid TOML basic string (same escapes)
    return "[auth]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def write_private(text: str) -> Path:
    """`text` as secrets.toml in a new private folder (0700; the file 0600); returns the file."""
    folder = Path(tempfile.mkdtemp(prefix="flywheel-ui-secrets-"))
    path = folder / "secrets.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def oidc_secrets_file(sm: Any = None) -> Path | None:
    """In oidc mode, the written secrets.toml; None in the other modes."""
    from pydantic import ValidationError

    from flywheel.access.ui_identity import IdentitySettings

    try:
        s = IdentitySettings()
    except ValidationError as e:
        problems = [(f"FLYWHEEL_UI_{str(err['loc'][0]).upper()}: " if err["loc"] else "") + err["msg"]
                    for err in e.errors()]  # fmt: skip
        raise SignInConfigError("invalid sign-in settings: " + "; ".join(problems)) from e
    if s.auth != "oidc":
        return None
    assert s.oidc_secret_id and s.cookie_secret_id  # IdentitySettings requires both in oidc mode
    if sm is None:
        from flywheel.storage import secrets_client

        sm = secrets_client()
    return write_private(auth_secrets_toml(s.oidc_secret_id, s.cookie_secret_id, sm))


def command(host: str, port: int, secrets_file: Path | None = None) -> list[str]:
    """The `streamlit run` command line for app/ui/main.py on host:port (with Streamlit's secrets file when
    given: the OIDC sign-in's [auth] section)."""
    return [
        sys.executable, "-m", "app.ui.streamlit_main", "run", str(MAIN),  # streamlit, request heads bounded
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        *(["--secrets.files", str(secrets_file)] if secrets_file else []),
    ]  # fmt: skip


def run(host: str, port: int) -> int:
    """Run Streamlit until it exits; returns its exit status (128 + signal number when killed)."""
    secrets_file = oidc_secrets_file()
    try:
        return _run(command(host, port, secrets_file))
    finally:
        if secrets_file is not None:
            shutil.rmtree(secrets_file.parent, ignore_errors=True)


def _run(cmd: list[str]) -> int:
    proc = subprocess.Popen(cmd)

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
