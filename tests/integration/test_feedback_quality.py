"""Delayed labels and live quality against moto's server: `flywheel feedback` checks and uploads label files,
`flywheel quality` / live_quality join them with captures written here with the capture format itself, and every
figure equals sklearn's on the known set."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, r2_score

from flywheel.cli.main import main
from flywheel.feedback.captures import capture_key, to_parquet
from flywheel.feedback.live_quality import live_quality
from flywheel.registry.registrations import register
from flywheel.schema import Schema, load_schema
from tests.conftest import Stack

SAVINGS, CHURN = load_schema("savings"), load_schema("churn")
DAY1, DAY2 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC), datetime(2024, 5, 2, 17, 5, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


Row = tuple[str, int, datetime, Any]  # id, version, captured_at, prediction


def put_captures(stack: Stack, schema: Schema, model: str, rows: list[Row], seq: int) -> None:
    """One capture file of (id, version, captured_at, prediction) rows, as a replica would write it."""
    classes = list(schema.target.classes or ())
    columns = {
        "prediction_id": [r[0] for r in rows],
        "model": [model] * len(rows),
        "version": [r[1] for r in rows],
        "role": ["production"] * len(rows),
        "captured_at": [r[2] for r in rows],
        "prediction": [r[3] for r in rows],
        "probabilities": [[1.0 if c == r[3] else 0.0 for c in classes] if classes else None for r in rows],
        "features": [dict.fromkeys(schema.feature_names) for _ in rows],
    }
    meta = {"model": model, "pod": "test", **({"classes": json.dumps(classes)} if classes else {})}
    stack.put(capture_key(model, rows[0][2], "test", seq), to_parquet(schema, columns, meta))


def put_manifest(stack: Stack, model: str, version: int, metric: str, score: float) -> None:
    doc = {"gate": {"primary_metric": metric}, "metrics": {"candidate": {metric: score}}, "status": "promoted"}
    stack.put(f"models/{model}/versions/{version:06d}/manifest.json", json.dumps(doc).encode())


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_live_quality_equals_sklearn_on_a_known_set(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_captures(stack, SAVINGS, "savings", [("r1", 1, DAY1, 100.0), ("r2", 1, DAY1, 250.0), ("r3", 2, DAY1, 80.0),
                                             ("r6", 1, DAY1, 999.0)], seq=1)  # fmt: skip
    # r6 is captured again later by v2 (a client reusing its id): the newest capture is the one labelled
    put_captures(stack, SAVINGS, "savings", [("r4", 1, DAY2, -50.0), ("r5", 2, DAY2, 300.0), ("r6", 2, DAY2, 410.0),
                                             ("r7", 2, DAY2, 5.0)], seq=2)  # fmt: skip
    put_manifest(stack, "savings", 1, "r2", 0.91)
    put_manifest(stack, "savings", 2, "r2", 0.93)

    first = write(tmp_path, "labels.csv", "id,monthly_savings\nr1,120\nr2,200\nr3,70\nr4,-40\nr5,350\nr6,400\n"
                                          "ghost-1,5\n")  # fmt: skip
    code, out, _ = run(capsys, "feedback", first, "--model", "savings")
    assert code == 0 and "accepted, 7 label(s)" in out and f"s3://{stack.bucket}/feedback/savings/labels.csv" in out
    time.sleep(1.1)  # S3 LastModified has whole seconds: the correction must be newer, though its key sorts first
    fix = write(tmp_path, "fix.csv", " monthly_savings , id \n240,r2\n7,ghost-2\n")
    code, out, _ = run(capsys, "feedback", fix, "--as", "a-fix", "--json")
    assert code == 0 and json.loads(out)["uploaded"] == f"s3://{stack.bucket}/feedback/savings/a-fix.csv"
    stack.put("feedback/savings/z-bad.csv", b"id,monthly_savings\nr1,abc\n")  # written around the CLI

    q = live_quality(stack.s3, stack.bucket, "savings", SAVINGS)
    truth = {"r1": 120.0, "r2": 240.0, "r3": 70.0, "r4": -40.0, "r5": 350.0, "r6": 400.0}
    groups = {  # (version, day) -> ids; None = the version overall
        (1, None): ["r1", "r2", "r4"], (1, "2024-05-01"): ["r1", "r2"], (1, "2024-05-02"): ["r4"],
        (2, None): ["r3", "r5", "r6"], (2, "2024-05-01"): ["r3"], (2, "2024-05-02"): ["r5", "r6"],
    }  # fmt: skip
    pred = {"r1": 100.0, "r2": 250.0, "r3": 80.0, "r4": -50.0, "r5": 300.0, "r6": 410.0}
    by_version = {v["version"]: v for v in q["versions"]}
    assert sorted(by_version) == [1, 2]
    assert [by_version[1]["captured"], by_version[2]["captured"]] == [3, 4]
    assert by_version[1]["holdout"] == {"metric": "r2", "score": 0.91}
    assert by_version[2]["holdout"] == {"metric": "r2", "score": 0.93}
    for (version, day), ids in groups.items():
        got = by_version[version]["live"] if day is None else {d["day"]: d for d in by_version[version]["days"]}[day]
        y, p = [truth[i] for i in ids], [pred[i] for i in ids]
        assert got["n"] == len(ids), (version, day)
        assert got["mae"] == mean_absolute_error(y, p), (version, day)
        assert got["r2"] == (r2_score(y, p) if len(ids) >= 2 else None), (version, day)
    assert q["labels"] == {"files": 2, "rows": 9, "ids": 8, "matched": 6, "unmatched": 2,
                           "unmatched_ids": ["ghost-1", "ghost-2"], "relabelled": 1, "ambiguous": 0,
                           "ambiguous_ids": []}  # fmt: skip
    assert [s["file"] for s in q["skipped"]] == ["feedback/savings/z-bad.csv"]
    assert q["skipped"][0]["problems"][0]["lines"] == [2]

    code, out, _ = run(capsys, "quality", "--model", "savings", "--json")
    assert code == 0 and json.loads(out) == q
    code, out, _ = run(capsys, "quality")
    assert code == 0 and "savings (regression" in out and "0.9100" in out and "2024-05-02" in out
    assert "2 unmatched (ghost-1, ghost-2), 1 relabelled" in out and "skipped feedback/savings/z-bad.csv" in out


def test_classification_accuracy_and_balanced_accuracy(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(stack.s3, stack.bucket, "churn", CHURN)
    preds = {"c1": "yes", "c2": "no", "c3": "no", "c4": "yes", "c5": "no", "c6": "no"}
    truth = {"c1": "yes", "c2": "no", "c3": "yes", "c4": "yes", "c5": "yes", "c6": "no"}
    put_captures(stack, CHURN, "churn", [(i, 3, DAY1 if i < "c4" else DAY2, p) for i, p in preds.items()], seq=1)
    put_manifest(stack, "churn", 3, "balanced_accuracy", 0.8)
    labels = write(tmp_path, "churn.csv", "id,churned\n" + "".join(f"{i},{t}\n" for i, t in truth.items()))
    assert run(capsys, "feedback", labels, "--model", "churn")[0] == 0

    q = live_quality(stack.s3, stack.bucket, "churn", CHURN)
    (v,) = q["versions"]
    y, p = list(truth.values()), list(preds.values())
    assert v["live"] == {"n": 6, "accuracy": accuracy_score(y, p), "balanced_accuracy": balanced_accuracy_score(y, p)}
    assert v["live"]["balanced_accuracy"] == 0.75 and v["holdout"]["score"] == 0.8
    for day, part in (("2024-05-01", slice(0, 3)), ("2024-05-02", slice(3, 6))):
        want = {
            "accuracy": accuracy_score(y[part], p[part]),
            "balanced_accuracy": balanced_accuracy_score(y[part], p[part]),
        }
        assert {"day": day, "n": 3, **want} in v["days"]
    assert q["labels"]["unmatched"] == 0 and q["labels"]["relabelled"] == 0


BAD = {  # file text -> (check, column, line) the report must name
    "id,monthly_savings,extra\na,1,2\n": ("header", None, None),
    "id,monthly_savings\na,1\nb,abc\n": ("type", "monthly_savings", 3),
    "id,monthly_savings\na,1\nb,2\nc,60000\n": ("range", "monthly_savings", 4),
    "id,monthly_savings\nbad id!,1\n": ("id", "id", 2),
    "id,monthly_savings\n,1\n": ("null", "id", 2),
    "id,monthly_savings\na,1\nb,2\na,3\n": ("duplicates", "id", 2),
}


@pytest.mark.parametrize(("text", "want"), list(BAD.items()), ids=["column", "type", "range", "id", "empty-id", "dup"])
def test_bad_feedback_is_reported_and_not_uploaded(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, want: tuple[str, str | None, int]
) -> None:
    path = write(tmp_path, "bad.csv", text)
    code, out, _ = run(capsys, "feedback", path, "--json")
    assert code == 1
    report = json.loads(out)
    check, column, line = want
    assert report["accepted"] is False and report["file"] == path
    problem = next(p for p in report["problems"] if p["check"] == check)
    assert problem.get("column") == column
    if line is not None:
        assert problem["lines"][0] == line and f"line(s) [{line}" in problem["message"]
    if check == "duplicates":
        assert problem["lines"] == [2, 4] and "['a']" in problem["message"]
    if check == "header":
        assert "unknown column(s) ['extra']" in problem["message"]
    code, out, _ = run(capsys, "feedback", path)
    assert code == 1 and out.startswith(f"{path}: rejected") and check in out
    assert stack.keys("feedback/") == []


def test_feedback_names_are_never_replaced(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "l.csv", "id,monthly_savings\na,1\n")
    assert run(capsys, "feedback", path, "--as", "day1")[0] == 0
    code, _, err = run(capsys, "feedback", path, "--as", "day1.csv")
    assert code == 2 and "feedback/savings/day1.csv already exists" in err
    assert stack.keys("feedback/") == ["feedback/savings/day1.csv"]
    code, _, err = run(capsys, "feedback", path, "--model", "nope")
    assert code == 2 and "'nope' is not registered" in err
