"""The Capturer's files, written to moto: every row where it belongs (ids, versions, roles, times, inputs,
predictions, probabilities in class order), one file per model and UTC day, a null for what was not given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from flywheel.feedback.captures import classes_of, read
from flywheel.schema import load_schema
from flywheel.serving.capture import Capturer, prediction_ids
from flywheel.serving.metrics import ServingMetrics
from tests.conftest import Stack

CHURN = load_schema("churn")
SAVINGS = load_schema("savings")


def _inputs(schema: Any, n: int, seed: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for j, f in enumerate(schema.features):
        if f.type == "numeric":
            out[f.name] = [float(seed * 100 + i * 10 + j) for i in range(n)]
        else:
            out[f.name] = [(f.categories or ["x"])[(seed + i) % len(f.categories or ["x"])] for i in range(n)]
    return out


def _capturer(stack: Stack) -> tuple[Capturer, ServingMetrics]:
    metrics = ServingMetrics(CollectorRegistry())
    return Capturer(stack.s3, stack.bucket, "pod-a", metrics, flush_rows=10**9), metrics


def test_classification_rows_hold_ids_roles_and_probabilities_in_class_order(stack: Stack) -> None:
    cap, metrics = _capturer(stack)
    classes = ["no", "yes"]
    first, second = _inputs(CHURN, 2, 1), _inputs(CHURN, 1, 2)
    cap.record("churn", CHURN, classes, ["a", "b"], 3, "production", first, ["yes", "no"],
               [{"yes": 0.75, "no": 0.25}, {"no": 0.9, "yes": 0.1}])  # fmt: skip
    cap.record("churn", CHURN, classes, ["c"], 4, "candidate", second, ["no"], None)
    cap.flush()
    table = read(stack.s3, stack.bucket, "churn")
    assert table is not None and classes_of(table) == classes
    rows = table.to_pylist()
    assert [r["prediction_id"] for r in rows] == ["a", "b", "c"]
    assert [(r["version"], r["role"], r["prediction"]) for r in rows] == [
        (3, "production", "yes"), (3, "production", "no"), (4, "candidate", "no")]  # fmt: skip
    assert [r["probabilities"] for r in rows] == [[0.25, 0.75], [0.9, 0.1], None]
    assert rows[2]["features"] == {k: v[0] for k, v in second.items()}
    assert metrics.captured.labels(model="churn")._value.get() == 3


def test_one_file_per_utc_day_and_per_schema(stack: Stack) -> None:
    cap, _ = _capturer(stack)
    before = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC).timestamp()
    clock = iter([before, before + 2, before + 3])
    cap.clock = lambda: next(clock)
    cols = _inputs(SAVINGS, 1, 0)
    cap.record("savings", SAVINGS, [], ["d1"], 1, "production", cols, [10.0], None)
    cap.record("savings", SAVINGS, [], ["d2"], 1, "production", cols, [11.0], None)
    other = SAVINGS.model_copy()  # the model hot-swapped to another schema object before the flush
    cap.record("savings", other, [], ["d3"], 2, "production", cols, [12.0], None)
    cap.flush()
    keys = stack.keys("captures/")
    assert len(keys) == 3
    assert sum("date=2026-03-01/" in k for k in keys) == 1 and sum("date=2026-03-02/" in k for k in keys) == 2
    table = read(stack.s3, stack.bucket, "savings")
    assert table is not None
    got = {r["prediction_id"]: (r["captured_at"], r["prediction"]) for r in table.to_pylist()}
    assert got["d1"] == (datetime.fromtimestamp(before, UTC).replace(microsecond=0), 10.0)
    assert got["d3"][1] == 12.0


def test_server_ids_are_unique_hex() -> None:
    ids = prediction_ids(None, 5) + prediction_ids(None, 1)
    assert len(set(ids)) == 6 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_request_that_does_not_line_up_is_dropped_and_the_others_stay_aligned(stack: Stack) -> None:
    cap, metrics = _capturer(stack)
    good = _inputs(SAVINGS, 2, 1)
    cap.record("savings", SAVINGS, [], ["g1", "g2"], 1, "production", good, [1.0, 2.0], None)
    short = {**good, SAVINGS.features[0].name: [1.0]}  # one input value for two ids
    cap.record("savings", SAVINGS, [], ["b1", "b2"], 1, "production", short, [3.0, 4.0], None)
    cap.record("savings", SAVINGS, [], ["b3"], 1, "production", {}, [5.0], None)  # no inputs at all
    cap.record("savings", SAVINGS, [], ["g3"], 1, "production", _inputs(SAVINGS, 1, 2), [6.0], None)
    cap.flush()
    table = read(stack.s3, stack.bucket, "savings")
    assert table is not None
    rows = table.to_pylist()
    assert [(r["prediction_id"], r["prediction"]) for r in rows] == [("g1", 1.0), ("g2", 2.0), ("g3", 6.0)]
    assert rows[2]["features"] == {k: v[0] for k, v in _inputs(SAVINGS, 1, 2).items()}
    assert metrics.capture_dropped.labels(model="savings", reason="error")._value.get() == 3
