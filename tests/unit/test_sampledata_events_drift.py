from __future__ import annotations

import json

import numpy as np
import pandas as pd

from flywheel.data.sample_data import savings
from flywheel.training import drift
from flywheel.training.pipelines import holdout_mask
from lambdas.trainer.events import parse_event, relevant


def test_sample_data_is_deterministic_and_drift_shifts_it() -> None:
    a, b = savings(2000, seed=7), savings(2000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(savings(2000, seed=8))
    shifted = savings(2000, seed=7, drift=1.0)
    assert shifted["income"].mean() > 1.2 * a["income"].mean()
    assert shifted["debt"].mean() > 1.5 * a["debt"].mean()


def test_holdout_is_fixed_per_row() -> None:
    frame = savings(3000, seed=1)
    mask = holdout_mask(frame, 0.2)
    assert 0.15 < mask.mean() < 0.25
    shuffled = frame.sample(frac=1.0, random_state=3)
    again = holdout_mask(shuffled, 0.2)
    assert (pd.Series(mask, index=frame.index)[shuffled.index].to_numpy() == again).all()


def test_psi_detects_shift() -> None:
    base = savings(5000, seed=1)
    prof = drift.numeric_profile(base["income"])
    same = drift.psi(prof["proportions"], drift.histogram(prof, savings(5000, seed=2)["income"].to_numpy()))
    moved = drift.psi(prof["proportions"], drift.histogram(prof, savings(5000, seed=2, drift=1)["income"].to_numpy()))
    assert same < 0.02 and moved > 0.25
    cat = drift.categorical_profile(base["region"], ["north", "south", "east", "west", "central"])
    assert np.isclose(sum(cat["proportions"]), 1.0)
    assert drift.psi(cat["proportions"], drift.histogram(cat, ["west"] * 100)) > 1


def test_events_sqs_s3_and_test_event() -> None:
    s3 = {"bucket": {"name": "b"}, "object": {"key": "data/a%20b.csv", "versionId": "v1"}}
    note = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": s3}]}
    event = {
        "Records": [
            {"messageId": "1", "body": json.dumps(note)},
            {"messageId": "2", "body": json.dumps({"Event": "s3:TestEvent"})},
            {"messageId": "3", "body": "[1]"},
        ]
    }
    m1, m2, m3 = parse_event(event)
    assert m1.objects[0].key == "data/a b.csv" and m1.objects[0].version_id == "v1"
    assert m2.test_event and not m2.objects
    assert m3.error
    assert [o.key for o in relevant([m1, m2, m3], "data/")] == ["data/a b.csv"]
    assert relevant([m1], "other/") == []
