"""`flywheel up`'s state directory (keys, tokens, data, models) is its owner's only: 0700, files 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local.state import keep_private


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)  # what a login shell usually has
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_earlier_runs_state_is_tightened_and_new_files_are_private(tmp_path: Path, umask: None) -> None:
    state = tmp_path / ".flywheel"
    (state / "s3" / "bucket" / "data").mkdir(parents=True)
    (state / "s3" / "bucket" / "data" / "a.csv").write_text("x")
    (state / "api").mkdir()
    (state / "api" / "client.key").write_text("secret")
    assert mode(state / "api" / "client.key") == 0o644  # as an earlier run left it

    keep_private(state)

    assert mode(state) == 0o700
    for path in state.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    (state / "logs").mkdir()
    (state / "logs" / "api.log").write_text("new")
    assert mode(state / "logs") == 0o700 and mode(state / "logs" / "api.log") == 0o600


def test_a_new_state_directory_is_made_private(tmp_path: Path, umask: None) -> None:
    keep_private(tmp_path / "fresh" / ".flywheel")
    assert mode(tmp_path / "fresh" / ".flywheel") == 0o700
