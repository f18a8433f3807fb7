"""The memory budget every model host of a replica shares. No cgroup memory limit is set where the tests run,
so the (limit, usage) reading is passed in; everything else is the real budget."""

from __future__ import annotations

import pytest

from flywheel.errors import FlywheelError
from flywheel.serving.memory import HEADROOM_BYTES, MemoryBudget, expanded

MIB = 1024 * 1024


def test_no_limit_means_no_refusal() -> None:
    budget = MemoryBudget(lambda: (None, None))
    with budget.reserve("savings", 1, 10_000 * MIB):
        pass


def test_room_counts_every_model_held_and_every_load_under_way() -> None:
    usage = [500 * MIB]  # what the cgroup reports: it includes every model already loaded
    budget = MemoryBudget(lambda: (1024 * MIB, usage[0]))
    size = 50 * MIB  # needs expanded(50 MiB) + headroom = 364 MiB
    assert expanded(size) + HEADROOM_BYTES == 364 * MIB
    with budget.reserve("savings", 2, size):
        # churn loading at the same time: savings' load is not in the usage yet, but it is reserved
        with pytest.raises(FlywheelError) as info, budget.reserve("churn", 2, size):
            pass
        assert "churn v2" in info.value.message and "364 MiB reserved by other loads" in info.value.message
    budget.hold("savings", 2, size)
    usage[0] += expanded(size)  # savings v2 is in memory now (v1 freed later)
    with pytest.raises(FlywheelError) as info, budget.reserve("churn", 2, size):
        pass
    assert "models held: savings v2" in info.value.message and info.value.detail["limit_bytes"] == 1024 * MIB
    with budget.reserve("churn", 2, 10 * MIB):  # a smaller model still fits
        pass
    assert budget.held() == {"savings": (2, expanded(size))}
