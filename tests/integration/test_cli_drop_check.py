"""`flywheel drop` checks a file against its model's registered schema before uploading; `validate --model` reads
that schema from the bucket. Real boto3 calls against moto's server, the CLI's main() in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.cli.main import main
from tests.conftest import Stack
from tests.helpers import csv_bytes, wait_for

REPO = Path(__file__).resolve().parents[2]
CANCER_SCHEMA = REPO / "examples" / "breast-cancer" / "schema.json"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def savings_csv(tmp_path: Path, name: str = "batch.csv", typo: bool = False) -> Path:
    path = tmp_path / name
    data = csv_bytes(300, seed=4)
    path.write_bytes(data.replace(b"income,", b"incme,", 1) if typo else data)
    return path


def cancer_csv(tmp_path: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_")).rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map(dict(enumerate(data.target_names)))
    path = tmp_path / "cancer.csv"
    frame.to_csv(path, index=False)
    return path


def test_drop_refuses_a_header_typo_and_uploads_nothing(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = savings_csv(tmp_path, "typo.csv", typo=True)
    code, out, err = run(capsys, "drop", str(bad), "--model", "savings")
    assert code == 1, err
    assert f"{bad}: rejected" in out and "missing column(s) ['income']" in out and "'incme'" in out
    assert "not uploaded" in err and "--no-check" in err
    assert stack.keys("data/") == [] and stack.keys("quarantine/") == []
    # the same report as validate's
    code, validate_out, _ = run(capsys, "validate", str(bad), "--model", "savings")
    assert code == 1 and validate_out == out

    code, out, _ = run(capsys, "drop", str(bad), "--model", "savings", "--no-check")
    assert code == 0 and f"s3://{stack.bucket}/data/savings/typo.csv" in out
    assert stack.keys("data/") == ["data/savings/typo.csv"]


def test_drop_checks_against_each_models_registered_schema(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "models", "add", "cancer", "--schema", str(CANCER_SCHEMA))[0] == 0
    cancer, savings = cancer_csv(tmp_path), savings_csv(tmp_path)
    code, out, _ = run(capsys, "drop", str(savings), "--model", "cancer")
    assert code == 1 and "unknown column(s)" in out and "'income'" in out
    code, out, err = run(capsys, "drop", str(cancer), "--model", "cancer")
    assert code == 0 and "data/cancer/cancer.csv" in out, err
    # the default model of a bucket laid out the old way is not registered: the settings' schema (savings) counts
    assert stack.keys("models/") == ["models/cancer/schema.json"]
    code, out, _ = run(capsys, "drop", str(cancer))
    assert code == 1 and "missing column(s)" in out
    assert run(capsys, "drop", str(savings))[0] == 0
    assert stack.keys("models/") == ["models/cancer/schema.json"]  # checking registered nothing
    # a model nobody registered: refused before any upload, and told how to register it
    code, _, err = run(capsys, "drop", str(savings), "--model", "fraud")
    assert code == 2 and "'fraud' is not registered" in err and "flywheel models add fraud" in err
    assert stack.keys("data/") == ["data/cancer/cancer.csv", "data/savings/batch.csv"]
    # the create-only put is unchanged: a checked file under a taken name is refused, --as renames it
    code, _, err = run(capsys, "drop", str(savings))
    assert code == 2 and "already exists" in err
    assert run(capsys, "drop", str(savings), "--as", "batch-2.csv")[0] == 0


def test_validate_model_reads_the_registered_schema(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cancer = cancer_csv(tmp_path)
    code, _, err = run(capsys, "validate", str(cancer), "--model", "cancer")
    assert code == 2 and "'cancer' is not registered" in err
    assert run(capsys, "models", "add", "cancer", "--schema", str(CANCER_SCHEMA))[0] == 0
    code, out, _ = run(capsys, "validate", str(cancer), "--model", "cancer", "--json")
    assert code == 0 and json.loads(out)["rows"] == 569
    code, out, _ = run(capsys, "validate", str(cancer))  # no --model: $FLYWHEEL_SCHEMA or savings, no bucket
    assert code == 1 and "missing column(s)" in out
    code, out, _ = run(capsys, "validate", str(cancer), "--schema", str(CANCER_SCHEMA))
    assert code == 0 and "accepted, 569 rows" in out
    code, _, err = run(capsys, "validate", str(cancer), "--schema", "savings", "--model", "cancer")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "validate", str(cancer), "--model", "cancer", "--bucket", "no-such-bucket-here")
    assert code == 2 and "NoSuchBucket" in err


def _drop_and_wait(stack: Stack, path: Path, *extra: str) -> subprocess.Popen[str]:
    """`flywheel drop --wait` in its own process, as a user runs it; the test plays the trainer."""
    cmd = [sys.executable, "-m", "flywheel.cli", "drop", str(path), "--model", "savings", "--wait", "120", *extra]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = path.name
    wait_for(lambda: f"data/savings/{name}" in stack.keys("data/") or proc.poll() is not None, 60, interval=0.2,
             what=f"{name} uploaded")  # fmt: skip
    return proc


def test_drop_wait_says_what_became_of_the_batch(stack: Stack, tmp_path: Path) -> None:
    good = savings_csv(tmp_path, "good.csv")
    proc = _drop_and_wait(stack, good)
    assert main(["retrain", "--model", "savings"]) == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "data/savings/good.csv: trained into savings v1: production" in out and "serving v1" in out

    # the same bytes under another name: accepted, nothing new to train on, and said so
    (tmp_path / "again.csv").write_bytes(good.read_bytes())
    proc = _drop_and_wait(stack, tmp_path / "again.csv")
    assert main(["retrain", "--model", "savings"]) == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "data/savings/again.csv: accepted, not trained on: same content as data/savings/good.csv" in out

    # a bad batch uploaded anyway: the quarantine report, exit 1
    bad = savings_csv(tmp_path, "typo.csv", typo=True)
    proc = _drop_and_wait(stack, bad, "--no-check")
    assert main(["retrain", "--model", "savings"]) == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "data/savings/typo.csv: quarantined -> s3://" in out and "income" in out


def test_drop_wait_gives_up_after_its_time(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "drop", str(savings_csv(tmp_path)), "--model", "savings", "--wait", "1.5")
    assert code == 1 and "uploaded" in out and "no outcome after 1.5 s" in err
