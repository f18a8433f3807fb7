"""What the pages look like to a reader (issue 23, item 8): no `None` in a table, no emoji that needs an emoji
font, one label per button, and why a batch the trainer skipped is not trained on."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pandas as pd
from streamlit.testing.v1 import AppTest

from flywheel.jobs.retrain import retrain
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.ui.conftest import ROOT, Signer, open_app, train
from tests.ui.rendered import missing_cells
from tests.ui.test_quality_panel import put_captures

#: pictographs and dingbats (✅ ❌ ✓ ★ 🔄 ...): drawn from an emoji or symbol font, an empty box without one
EMOJI = re.compile("[\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001ffff]")


def test_no_emoji_in_the_ui_sources() -> None:
    """Words or Streamlit's own material icons (`:material/check:`) instead: they render everywhere."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "app" / "ui").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if EMOJI.search(line)
    ]
    assert found == []


def bad_batch() -> bytes:
    """A batch with a problem in a column (age out of range) and one in no column (repeated rows)."""
    frame = pd.read_csv(io.BytesIO(csv_bytes(100, seed=7)))
    frame = pd.concat([frame, frame.head(10)])
    frame.iloc[3, frame.columns.get_loc("age")] = 500
    return frame.to_csv(index=False).encode()


def test_no_table_prints_none_on_the_models_and_data_pages(stack: Stack) -> None:
    """v1 has no previous production score, a fresh canary has no latency or shadow figures, one label has no R²,
    a repeated-rows problem has no column: each of those cells reads `—`, never `None`."""
    stack.put("data/bad.csv", bad_batch())
    train(stack, seed=1)
    train(stack, seed=2, gate_tolerance=1.0, rollout_mode="canary", rollout_share=0.5)
    put_captures(stack, [("r1", 1, datetime(2024, 5, 1, 9, 30, tzinfo=UTC), 100.0)], seq=1)
    stack.put("feedback/savings/labels.csv", b"id,monthly_savings\nr1,120\n")

    models = open_app("models")
    assert len(models.dataframe) >= 5, "versions, rollout figures, history, live quality, metrics"
    assert missing_cells(models) == []
    data = open_app("data")
    assert len(data.dataframe) == 2, "batches, the quarantined batch's problems"
    assert missing_cells(data) == []


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def test_every_button_says_what_it_does(stack: Stack, signer: Signer) -> None:
    """The file uploader's own button reads "Upload" (it chooses the file): the button that sends the batch to the
    bucket says so, and no two buttons on a page share a label."""
    train(stack, seed=1)
    train(stack, seed=2, gate_tolerance=1.0, rollout_mode="canary", rollout_share=0.5)
    operator = signer.token("operator")
    for page in ("data", "models", "drift", None):
        at = open_app(page, identity=operator)
        assert len(labels(at)) == len(set(labels(at))), (page, labels(at))
        assert "Upload" not in labels(at), page
    assert "Upload batch to savings" in labels(open_app("data", identity=operator))


def test_a_batch_skipped_as_an_exact_repeat_says_so(stack: Stack) -> None:
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2)
    data = csv_bytes(600, seed=1)
    first, again = "data/savings/march.csv", "data/savings/repeat-of-march.csv"
    stack.put(first, data)
    assert retrain(settings, s3_client()).status == "promoted"
    stack.put(again, data)  # the same bytes, uploaded later (in the same second the key decides: also later)
    outcome = retrain(settings, s3_client())
    assert outcome.status == "unchanged", "nothing new to train on: no manifest records the repeat"
    assert [d["key"] for d in outcome.left_out] == [again]

    at = open_app("data")

    batches = at.dataframe[0].value.set_index("key")
    assert batches.loc[first, "in v1"] and not batches.loc[again, "in v1"]
    assert batches.loc[again, "note"] == f"skipped: same content as {first}"
    assert batches.loc[first, "note"] == ""
    assert Registry(stack.s3, stack.bucket, "savings").versions() == [1]


def test_a_batch_left_out_of_the_training_window_says_so(stack: Stack) -> None:
    stack.put("data/savings/old.csv", csv_bytes(600, seed=1))
    stack.put("data/savings/new.csv", csv_bytes(600, seed=2))
    # the window keeps the newest whole batches up to 700 rows: one of the two is left out, the manifest says why
    settings = TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2, train_window_rows=700)
    outcome = retrain(settings, s3_client())
    assert outcome.status == "promoted" and len(outcome.left_out) == 1
    (out,) = outcome.left_out
    at = open_app("data")
    notes = at.dataframe[0].value.set_index("key")["note"]
    assert notes[out["key"]] == f"left out of v1: {out['reason']}"
    assert "outside the training window (700 rows)" in out["reason"]
