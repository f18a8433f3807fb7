"""A client's own prediction ids: one per instance, 1-128 characters of A-Z a-z 0-9 . _ : - and nothing else."""

from __future__ import annotations

import os

import pytest

from flywheel.errors import InvalidInput
from flywheel.serving.capture import prediction_ids


def test_good_ids_are_kept_and_missing_ones_are_made() -> None:
    assert prediction_ids(["order-1001", "a.b:c_d"], 2) == ["order-1001", "a.b:c_d"]
    made = prediction_ids(None, 3)
    assert len(made) == 3 and len(set(made)) == 3 and all(len(i) == 32 for i in made)


@pytest.mark.parametrize("bad", ["abc\n", "abc\r\n", "\nabc", "a b", "", "x" * 129, "é", "abc\x00"])
def test_an_id_with_anything_else_is_refused_naming_ids(bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        prediction_ids(["fine", bad], 2)
    assert refused.value.detail == {"field": "ids", "instance": 1} and "ids[1]" in refused.value.message


def test_made_ids_never_repeat_across_refills_or_in_a_forked_child() -> None:
    """One-row ids come from a pool drawn ahead of need: across several refills every id is new, 32 hex
    characters, and a child forked with ids left in the pool draws fresh ones, not its parent's next ones."""
    made = [prediction_ids(None, 1)[0] for _ in range(1000)]
    assert len(set(made)) == len(made) and all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent
        os.close(read)
        os.write(write, " ".join(prediction_ids(None, 1)[0] for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [prediction_ids(None, 1)[0] for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
