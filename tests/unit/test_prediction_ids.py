"""A client's own prediction ids: one per instance, 1-128 characters of A-Z a-z 0-9 . _ : - and nothing else."""

from __future__ import annotations

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
