"""Labelled captures become training data: `flywheel feedback FILE --train` writes the labelled captured
predictions as a batch under data/<model>/feedback/, and the next retrain trains on it with the batch in its
manifest's lineage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flywheel.cli.main import main
from flywheel.feedback.captures import capture_key, to_parquet
from flywheel.jobs.retrain import retrain
from flywheel.registry.store import Registry
from flywheel.schema import load_schema
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.conftest import ROW

SAVINGS = load_schema("savings")


def put_captures(stack: Stack, n: int) -> list[dict[str, float]]:
    """`n` captured predictions of v1 (ids c0..), inputs varied around ROW; returns the inputs."""
    rows = [{**ROW, "income": 2000.0 + 50 * i, "age": 25 + i % 40, "credit_score": None if i == 3 else 650}
            for i in range(n)]  # fmt: skip
    features = {f.name: [r[f.name] for r in rows] for f in SAVINGS.features}
    at = datetime.now(UTC)
    body = to_parquet(SAVINGS, {"prediction_id": [f"c{i}" for i in range(n)], "model": ["savings"] * n,
                                "version": [1] * n, "role": ["production"] * n, "captured_at": [at] * n,
                                "prediction": [100.0] * n, "probabilities": [None] * n, "features": features},
                      {"model": "savings"})  # fmt: skip
    stack.put(capture_key("savings", at, "pod-a", 1), body)
    return rows  # type: ignore[return-value]


def test_labelled_captures_train_the_next_version(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.put("data/savings/first.csv", csv_bytes(800, seed=1))
    assert retrain(TrainerSettings(bucket=stack.bucket), s3_client()).version == 1
    inputs = put_captures(stack, 40)
    labels = tmp_path / "week-48.csv"
    labels.write_text("id,monthly_savings\n" + "".join(f"c{i},{500 + 10 * i}\n" for i in range(40)) + "nobody,5\n")

    assert main(["feedback", str(labels), "--model", "savings", "--train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    batch = "data/savings/feedback/week-48.csv"
    assert report["batch"] == {"key": batch, "rows": 40, "unmatched": 1, "ambiguous": 0, "ambiguous_ids": []}
    head = stack.s3.head_object(Bucket=stack.bucket, Key=batch)
    assert head["Metadata"]["source"] == "feedback"
    assert head["Metadata"]["feedback-key"] == "feedback/savings/week-48.csv"
    written = stack.s3.get_object(Bucket=stack.bucket, Key=batch)["Body"].read().decode().splitlines()
    assert written[0] == ",".join([*SAVINGS.feature_names, "monthly_savings"])
    assert written[1].startswith(f"{inputs[0]['income']},") and written[1].endswith(",500.0")
    assert ",," in written[4]  # the missing credit score stays missing

    out = retrain(TrainerSettings(bucket=stack.bucket, gate_tolerance=1.0), s3_client())
    assert out.version == 2, out
    lineage = Registry(stack.s3, stack.bucket, "savings").manifest(2)["data"]["batches"]
    assert batch in [b["key"] for b in lineage]
    assert out.rows == 840  # the first batch and the 40 labelled predictions

    # once only: a feedback file's name is taken for good, so it cannot be turned into a second batch
    assert main(["feedback", str(labels), "--model", "savings", "--train"]) != 0
    assert "already exists" in capsys.readouterr().err
    assert [o["Key"] for o in stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="data/savings/feedback/")[
        "Contents"]] == [batch]  # fmt: skip
