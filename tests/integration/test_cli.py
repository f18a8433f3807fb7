"""The `flywheel` CLI against moto's server (in-process main(), real boto3 calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.cli.main import build_parser, main
from tests.conftest import Stack


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) >= {"sample-data", "models", "promote", "rollback", "retrain", "drop", "serve", "ui", "up"}
    for name in commands:  # in this process: the parser is the same one `python -m flywheel.cli` builds
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and "usage: flywheel " + name in capsys.readouterr().out, name
    # and the module entry point itself (the Batch job's and the local stack's command)
    out = subprocess.run([sys.executable, "-m", "flywheel.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in commands), out.stderr


def test_sample_data_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run(capsys, "sample-data", "--rows", "50", "--seed", "3", "--out", str(a))[0] == 0
    assert run(capsys, "sample-data", "--rows", "50", "--seed", "3", "--out", str(b))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_text().splitlines()) == 51


def test_drop_retrain_models_promote_rollback(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed, drift in ((1, 0.0), (2, 1.0)):
        path = tmp_path / f"batch-{seed}.csv"
        run(capsys, "sample-data", "--rows", "1200", "--seed", str(seed), "--drift", str(drift), "--out", str(path))
        code, out, _ = run(capsys, "drop", str(path))
        assert code == 0 and f"s3://{stack.bucket}/data/savings/batch-{seed}.csv" in out
        code, out, _ = run(capsys, "retrain")
        assert code == 0 and out.startswith("promoted: savings version")
    code, out, _ = run(capsys, "retrain")
    assert out.startswith("unchanged")
    code, out, _ = run(capsys, "models", "--model", "savings", "--json")
    rows = json.loads(out)
    assert [r["version"] for r in rows] == [1, 2] and [r["production"] for r in rows] == [False, True]
    code, out, _ = run(capsys, "models")
    assert "*       2  production" in out and "        1  was production" in out
    code, out, _ = run(capsys, "rollback")
    assert code == 0 and "production -> v1 (was v2)" in out
    code, out, _ = run(capsys, "promote", "2", "--reason", "fixed")
    assert code == 0 and "production -> v2" in out
    assert stack.get_json("models/savings/aliases/production.json")["reason"] == "fixed"


def test_errors_are_clear(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollback")
    assert code == 2 and "nothing is in production" in err
    code, _, err = run(capsys, "promote", "7")
    assert code == 2 and "no version 7" in err
    code, _, err = run(capsys, "drop", str(tmp_path / "missing.csv"))
    assert code == 2 and "no such file" in err


def test_drop_refuses_an_existing_name(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "b.csv", tmp_path / "other.csv"
    first.write_bytes(b"one\n")
    second.write_bytes(b"two\n")
    assert run(capsys, "drop", str(first), "--no-check")[0] == 0  # not batches: only the names matter here
    code, _, err = run(capsys, "drop", str(second), "--as", "b.csv", "--no-check")
    assert code == 2 and "data/savings/b.csv already exists" in err and "--as NAME" in err
    assert stack.s3.get_object(Bucket=stack.bucket, Key="data/savings/b.csv")["Body"].read() == b"one\n"
    assert run(capsys, "drop", str(second), "--as", "b-2.csv", "--no-check")[0] == 0
    assert stack.keys("data/") == ["data/savings/b-2.csv", "data/savings/b.csv"]


def test_validate_reports_like_the_quarantine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.csv"
    assert run(capsys, "sample-data", "--rows", "300", "--out", str(good))[0] == 0
    code, out, _ = run(capsys, "validate", str(good))
    assert code == 0 and "accepted, 300 rows" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace("north", "atlantis", 1))
    code, out, _ = run(capsys, "validate", str(bad), "--json")
    report = json.loads(out)
    assert code == 1 and report["accepted"] is False and report["file"] == str(bad)
    (problem,) = report["problems"]
    assert problem["check"] == "category" and problem["column"] == "region" and problem["count"] == 1
    code, out, _ = run(capsys, "validate", str(bad))
    assert code == 1 and "category [region]:" in out and "atlantis" in out


def test_two_models_from_the_cli(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "add", "churn", "--schema", "churn")
    assert code == 0 and "churn: registered" in out and "data/churn/" in out
    assert run(capsys, "models", "add", "churn", "--schema", "churn")[1].startswith("churn: already registered")
    code, _, err = run(capsys, "models", "add", "churn", "--schema", "savings")
    assert code == 2 and "never changes" in err
    path = tmp_path / "c.csv"
    run(capsys, "sample-data", "--dataset", "churn", "--rows", "900", "--out", str(path))
    code, out, _ = run(capsys, "drop", str(path), "--model", "churn")
    assert code == 0 and f"s3://{stack.bucket}/data/churn/c.csv" in out
    code, out, _ = run(capsys, "retrain", "--model", "churn")
    assert code == 0 and out.startswith("promoted: churn version 1")
    code, out, _ = run(capsys, "models", "--json")
    listing = json.loads(out)
    assert set(listing) == {"churn", "savings"} and [r["version"] for r in listing["churn"]] == [1]
    assert listing["savings"] == []
    code, out, _ = run(capsys, "models")
    assert "churn (classification, schema 'churn')" in out and "savings (regression" in out
    code, _, err = run(capsys, "models", "--model", "fraud")
    assert code == 2 and "'fraud' is not registered" in err


def test_the_cli_finds_a_running_local_stack_or_says_what_is_missing(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYWHEEL_"))}
    env["FLYWHEEL_STATE_DIR"] = str(tmp_path)
    cli = [sys.executable, "-m", "flywheel.cli", "models", "--json"]
    out = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "missing setting FLYWHEEL_BUCKET" in out.stderr and "make up" in out.stderr
    from app.local.state import StateLock
    from flywheel.cli.stack_env import write_stack_file

    lock = StateLock(tmp_path)
    lock.acquire()  # a stack counts while its `up` holds the lock
    write_stack_file(tmp_path, {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": "t",
                                "AWS_SECRET_ACCESS_KEY": "t", "AWS_REGION": "us-east-1",
                                "FLYWHEEL_BUCKET": stack.bucket})  # fmt: skip
    out = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path)
    lock.release()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"savings": []}
