"""The local stack's files as an attacker or an accident would meet them: another user's stack.json or record, a
planted symlink, a killed `up`, a restore interrupted half way. Real files, real flock, moto's server for S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.local.state import Mirror, StackRunning, StateLock
from flywheel.cli.stack_env import find_stack, read_stack, running_dir, write_stack_file
from tests.conftest import Stack

NOBODY = 65534
VALUES = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": "us-east-1",
    "FLYWHEEL_BUCKET": "flywheel-local",
    "FLYWHEEL_API_URL": "http://127.0.0.1:8080",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FLYWHEEL_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def running(state: Path, values: dict[str, str] = VALUES) -> StateLock:
    lock = StateLock(state)
    lock.acquire()
    write_stack_file(state, values)
    return lock


def test_a_stack_counts_only_while_its_up_holds_the_lock(home: Path) -> None:
    state = home / "state"
    lock = running(state)
    assert find_stack() is not None and find_stack().state_dir == state.resolve()  # type: ignore[union-attr]
    assert len(list(running_dir().glob("*.json"))) == 1
    lock.release()  # what the kernel does when `up` is killed: stack.json and the record are left behind
    assert (state / "stack.json").exists()
    assert read_stack(state) is None and find_stack() is None
    assert list(running_dir().glob("*.json")) == []  # the stale record is cleaned up


def test_a_second_lock_on_the_same_state_is_refused(home: Path) -> None:
    lock = running(home / "state")
    with pytest.raises(StackRunning, match=r"already running from .*state"):
        StateLock(home / "state").acquire()
    lock.release()
    StateLock(home / "state").acquire()


def test_a_planted_symlink_is_never_followed(home: Path) -> None:
    victim = home / "victim.txt"
    victim.write_text("precious")
    state = home / "state"
    state.mkdir(mode=0o700)
    (state / "up.lock").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):  # O_NOFOLLOW
        StateLock(state).acquire()
    assert victim.read_text() == "precious"
    (state / "up.lock").unlink()
    # a link where stack.json or the record goes is replaced, not written through
    (state / "stack.json").symlink_to(victim)
    lock = running(state)
    assert victim.read_text() == "precious" and not (state / "stack.json").is_symlink()
    lock.release()


def test_the_state_dir_is_private_from_the_first_file(home: Path) -> None:
    lock = StateLock(home / "new-state")
    lock.acquire()
    assert (home / "new-state").stat().st_mode & 0o777 == 0o700
    assert (home / "new-state" / "up.lock").stat().st_mode & 0o777 == 0o600
    lock.release()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a file another user's")
def test_another_users_stack_file_or_record_is_ignored(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = home / "state"
    lock = running(state)
    os.chown(state / "stack.json", NOBODY, NOBODY)
    assert read_stack(state) is None
    assert "owned by uid 65534" in capsys.readouterr().err
    os.chown(state / "stack.json", os.getuid(), os.getgid())
    assert read_stack(state) is not None
    # a records folder another user could write in is not read at all
    running_dir().chmod(0o777)
    assert find_stack() is None  # not found through the record (and cwd holds no .flywheel)
    running_dir().chmod(0o700)
    lock.release()


@pytest.mark.parametrize(
    ("entry", "value", "why"),
    [
        ("AWS_CONFIG_FILE", "/tmp/evil.cfg", "unexpected entry 'AWS_CONFIG_FILE'"),
        ("AWS_ENDPOINT_URL", "http://evil.example:80", "is not a loopback URL"),
        ("FLYWHEEL_API_KEYS_FILE", "/etc/passwd", "is outside"),
        ("MLFLOW_TRACKING_URI", "file:///tmp/mlruns", "MLFLOW_TRACKING_URI"),
        ("MLFLOW_TRACKING_URI", "https://user:pw@mlflow.example", "MLFLOW_TRACKING_URI"),
    ],
)
def test_a_stack_file_with_more_than_up_writes_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str], entry: str, value: str, why: str
) -> None:
    state = home / "state"
    lock = running(state, {**VALUES, entry: value})
    assert read_stack(state) is None
    assert why in capsys.readouterr().err
    lock.release()


def test_the_cli_uses_a_stack_found_from_another_folder(home: Path, stack: Stack) -> None:
    state = home / "state"
    lock = running(state, {**VALUES, "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
                           "FLYWHEEL_BUCKET": stack.bucket})  # fmt: skip
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYWHEEL_"))}
    out = subprocess.run([sys.executable, "-m", "flywheel.cli", "models", "--json"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"savings": []}
    lock.release()
    out = subprocess.run([sys.executable, "-m", "flywheel.cli", "models", "--json"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "no running local stack" in out.stderr


def test_an_interrupted_restore_never_deletes_the_saved_state(stack: Stack, tmp_path: Path) -> None:
    saved = Mirror(stack.s3, stack.bucket, tmp_path)
    for i in range(6):
        stack.put(f"data/savings/batch-{i}.csv", b"a,b\n1,2\n" * (i + 1))
    saved.sync()
    for i in range(6):
        stack.s3.delete_object(Bucket=stack.bucket, Key=f"data/savings/batch-{i}.csv")
    # the next start: the restore is stopped (Ctrl-C) on its third upload, then stop() syncs a last time
    mirror = Mirror(stack.s3, stack.bucket, tmp_path)
    real_put, calls = stack.s3.put_object, []

    def put_then_interrupt(**kwargs: object) -> object:
        calls.append(kwargs["Key"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_put(**kwargs)

    methods = {"put_object": staticmethod(put_then_interrupt), "get_paginator": stack.s3.get_paginator,
               "get_object": stack.s3.get_object}  # fmt: skip
    mirror.s3 = type("InterruptedS3", (), methods)()
    with pytest.raises(KeyboardInterrupt):
        mirror.restore()
    mirror.sync()
    assert sorted(p.name for p in (tmp_path / "s3" / stack.bucket / "data" / "savings").iterdir()) == [
        f"batch-{i}.csv" for i in range(6)
    ]
    # and the next complete restore brings every one back
    again = Mirror(stack.s3, stack.bucket, tmp_path)
    assert again.restore() == 6
    assert len(stack.keys("data/savings/")) == 6
