"""Prediction ids are scoped to the API key that made them (docs/captures.md, "Ids and keys"): each captured row
holds the key's id (never the key), and a label of an id captured under more than one key joins nothing, neither
for training batches nor for live quality, and is reported as ambiguous. Without keys (auth off) and with capture
files older than the column, everything behaves as before."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry

from flywheel.feedback import captures
from flywheel.feedback.labelled_batches import join_labels, write_joined
from flywheel.feedback.live_quality import live_quality
from flywheel.schema import load_schema
from flywheel.serving.capture import Capturer
from flywheel.serving.capture_buffer import ModelBuffer
from flywheel.serving.metrics import ServingMetrics
from flywheel.settings import CoreSettings
from tests.conftest import Stack

SAVINGS = load_schema("savings")
AT = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
ROW = {"income": 5000.0, "expenses": 3000.0, "age": 40, "dependents": 1, "debt": 10000.0, "credit_score": 700,
       "tenure_years": 3.0, "region": "north"}  # fmt: skip
Capture = tuple[str, str | None, float, float]  # id, key id, income (the inputs told apart by it), prediction


def put(stack: Stack, rows: list[Capture], seq: int, minutes: int = 0, *, old_format: bool = False) -> None:
    """One capture file, as a replica writes it (`old_format`: as one written before the `key_id` column)."""
    at = AT.replace(minute=minutes)
    columns: dict[str, Any] = {
        "prediction_id": [r[0] for r in rows],
        "model": ["savings"] * len(rows),
        "version": [1] * len(rows),
        "role": ["production"] * len(rows),
        "captured_at": [at] * len(rows),
        "prediction": [r[3] for r in rows],
        "probabilities": [None] * len(rows),
        "features": [{**ROW, "income": r[2]} for r in rows],
        "key_id": [r[1] for r in rows],
    }
    body = captures.to_parquet(SAVINGS, columns, {"model": "savings"})
    if old_format:  # the same file without the column, as the replicas wrote it before
        table = pq.read_table(io.BytesIO(body)).drop_columns(["key_id"])
        assert "key_id" not in table.column_names
        out = io.BytesIO()
        pq.write_table(table, out)
        body = out.getvalue()
    stack.put(captures.capture_key("savings", at, "pod", seq), body)


def label_file(stack: Stack, name: str, labels: dict[str, float]) -> str:
    key = f"feedback/savings/{name}"
    stack.put(key, ("id,monthly_savings\n" + "".join(f"{k},{v}\n" for k, v in labels.items())).encode())
    return key


def test_an_id_captured_under_more_than_one_key_is_ambiguous() -> None:
    ids = ["shared", "shared", "mine", "mine", "anon", "anon", "mixed", "mixed", "once"]
    keys = ["a", "b", "a", "a", None, None, None, "a", "b"]
    assert captures.ambiguous(ids, keys).tolist() == [True, True, False, False, False, False, True, True, False]
    assert captures.ambiguous([], []).tolist() == []


def test_the_capturer_stores_each_requests_key_id_on_its_rows() -> None:
    written: list[bytes] = []

    class S3:
        def put_object(self, **kwargs: Any) -> None:
            written.append(kwargs["Body"])

    times = iter([AT.timestamp(), AT.timestamp() + 1, AT.timestamp() + 2])
    cap = Capturer(S3(), "b", "pod-a", ServingMetrics(CollectorRegistry()), clock=lambda: next(times))
    inputs = {k: [v, v] for k, v in ROW.items()}
    cap.record("savings", SAVINGS, [], ["x1", "x2"], 1, "production", inputs, [1.0, 2.0], None, "k-aaaa")
    cap.record("savings", SAVINGS, [], ["y1", "y2"], 1, "production", inputs, [3.0, 4.0], None, "k-bbbb")
    cap.record("savings", SAVINGS, [], ["z1", "z2"], 1, "production", inputs, [5.0, 6.0], None)  # API keys off
    cap.flush()
    (body,) = written
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [(r["prediction_id"], r["key_id"]) for r in rows] == [("x1", "k-aaaa"), ("x2", "k-aaaa"),
        ("y1", "k-bbbb"), ("y2", "k-bbbb"), ("z1", None), ("z2", None)]  # fmt: skip


def test_a_flush_across_midnight_keeps_each_requests_key() -> None:
    buffer = ModelBuffer("savings", SAVINGS, [])
    late, early = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC).timestamp(), AT.timestamp()
    buffer.add(["d1"], 1, "production", late, {k: [v] for k, v in ROW.items()}, [1.0], None, "k-aaaa")
    buffer.add(["d2", "d3"], 1, "production", early, {k: [v, v] for k, v in ROW.items()}, [2.0, 3.0], None, "k-bbbb")
    parts = buffer.by_day()
    got = [[(r["prediction_id"], r["key_id"]) for r in pq.read_table(io.BytesIO(p.parquet("pod"))).to_pylist()]
           for p in parts]  # fmt: skip
    assert got == [[("d1", "k-aaaa")], [("d2", "k-bbbb"), ("d3", "k-bbbb")]]


def test_capture_files_without_the_column_are_read_as_no_key(stack: Stack) -> None:
    put(stack, [("old", None, 1.0, 1.0)], seq=1, old_format=True)
    only_old = captures.read(stack.s3, stack.bucket, "savings")
    assert only_old is not None and "key_id" not in only_old.column_names
    assert captures.keys_of(only_old) == [None]
    put(stack, [("new", "k-aaaa", 2.0, 2.0)], seq=2)
    both = captures.read(stack.s3, stack.bucket, "savings")
    assert both is not None
    assert dict(zip(both.column("prediction_id").to_pylist(), captures.keys_of(both), strict=True)) == {
        "old": None, "new": "k-aaaa"}  # fmt: skip
    assert captures.arrow_schema(SAVINGS).field("key_id").type == pa.string()


def _attack(stack: Stack) -> None:
    """Key A predicts order-1001; key B, later, predicts the same id with hostile inputs (income 99999). a-1 and b-1
    are each one key's own; a-2 was captured twice by key A (a client reusing its own id: the newest wins)."""
    put(stack, [("order-1001", "k-aaaa", 3100.0, 10.0), ("a-1", "k-aaaa", 3200.0, 20.0),
                ("a-2", "k-aaaa", 3300.0, 30.0)], seq=1, minutes=1)  # fmt: skip
    put(stack, [("order-1001", "k-bbbb", 99999.0, 40000.0), ("b-1", "k-bbbb", 3400.0, 50.0),
                ("a-2", "k-aaaa", 3500.0, 60.0)], seq=2, minutes=2)  # fmt: skip


def test_a_label_of_an_id_captured_under_two_keys_makes_no_training_row(stack: Stack) -> None:
    _attack(stack)
    settings = CoreSettings(bucket=stack.bucket)
    key = label_file(stack, "day.csv", {"order-1001": 500.0, "a-1": 510.0, "a-2": 520.0, "b-1": 530.0, "ghost": 1.0})
    joined = join_labels(stack.s3, settings, "savings", SAVINGS, key)
    assert joined.ambiguous_ids == ["order-1001"] and joined.ambiguous == 1
    assert joined.unmatched == 1  # ghost: never captured (it may be, later); order-1001 is not waiting for anything
    assert dict(zip(joined.rows["id"], joined.rows["income"], strict=True)) == {"a-1": 3200.0, "a-2": 3500.0,
                                                                               "b-1": 3400.0}  # fmt: skip
    made = write_joined(stack.s3, settings, "savings", SAVINGS, key, joined, uploaded_by="test")
    assert (made.labelled, made.joined, made.unmatched) == (5, 3, 1)
    assert (made.ambiguous, made.ambiguous_ids) == (1, ["order-1001"])
    assert made.key is not None
    batch = stack.s3.get_object(Bucket=stack.bucket, Key=made.key)["Body"].read().decode()
    assert "99999" not in batch and "3100" not in batch and ",500" not in batch  # neither B's nor A's inputs


def test_a_label_of_an_id_captured_under_two_keys_counts_nowhere_in_live_quality(stack: Stack) -> None:
    _attack(stack)
    label_file(stack, "day.csv", {"order-1001": 500.0, "a-1": 25.0, "a-2": 55.0, "b-1": 45.0, "ghost": 1.0})
    q = live_quality(stack.s3, stack.bucket, "savings", SAVINGS)
    assert q["labels"] == {"files": 1, "rows": 5, "ids": 5, "matched": 3, "unmatched": 1, "unmatched_ids": ["ghost"],
                           "relabelled": 0, "ambiguous": 1, "ambiguous_ids": ["order-1001"]}  # fmt: skip
    (v,) = q["versions"]
    assert v["captured"] == 4  # order-1001 was captured all the same
    assert v["live"]["n"] == 3 and v["live"]["mae"] == 5.0  # |25-20|, |55-60|, |45-50|: B's 40000 never counts


def test_without_keys_and_with_older_files_ids_join_as_before(stack: Stack) -> None:
    """API auth off: no key on any row; older files: no column. An id captured twice joins its newest capture."""
    put(stack, [("order-1001", None, 3100.0, 10.0)], seq=1, minutes=1, old_format=True)
    put(stack, [("order-1001", None, 3600.0, 40.0)], seq=2, minutes=2)
    key = label_file(stack, "day.csv", {"order-1001": 50.0})
    joined = join_labels(stack.s3, CoreSettings(bucket=stack.bucket), "savings", SAVINGS, key)
    assert joined.ambiguous == 0 and joined.unmatched == 0 and joined.rows["income"].tolist() == [3600.0]
    q = live_quality(stack.s3, stack.bucket, "savings", SAVINGS)
    assert q["labels"]["matched"] == 1 and q["labels"]["ambiguous"] == 0 and q["versions"][0]["live"]["mae"] == 10.0
