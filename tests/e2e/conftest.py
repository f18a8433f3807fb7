"""e2e fixtures: a `flywheel up` to drive, and the replica starter of the integration tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack_harness import Up
from tests.integration.conftest import start_replica

__all__ = ["start_replica"]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    stack = Up(tmp_path / "state")
    yield stack
    if stack.proc is not None and stack.proc.poll() is None:
        stack.proc.kill()
        stack.proc.wait()
