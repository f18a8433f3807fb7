"""The README's walkthrough, run line by line as a new user would: `flywheel up` in a folder of its own, then every
command of the walkthrough's block in one shell, from that folder. Only the ports and /tmp are the test's own.

A command whose comment starts with `refused` must fail (a non-zero exit); every other one must succeed. The run ends
with the canary decided by the judge and the feedback loop closed: the labels uploaded by the walkthrough are
joined, and a version is trained on them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.stack_harness import ROOT, Up
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MARK = "@@walkthrough"
DECIDED = {"rollout-promoted", "rollout-aborted"}


def walkthrough_commands(readme: str) -> list[str]:
    """The commands of the first ```bash block under "## Walkthrough", continuation lines joined."""
    section = readme.split("## Walkthrough", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:  # a quote left open (or a trailing backslash) continues the command on the next line
            complete = bool(shlex.split(pending, comments=True) or True) and not pending.endswith("\\")
        except ValueError:
            complete = False
        if complete:
            if pending.strip() and not pending.lstrip().startswith("#"):
                commands.append(pending)
            pending = ""
    assert not pending, f"unterminated command in the walkthrough: {pending}"
    return commands


def refused(command: str) -> bool:
    comment = command.rsplit("  #", 1)[1].strip() if "  #" in command else ""
    return comment.startswith("refused")


def test_the_readme_walkthrough_works_as_written(up: Up, tmp_path: Path) -> None:
    home = tmp_path / "clone"  # what a user's clone looks like from the walkthrough's point of view
    home.mkdir()
    for name in (".venv", "examples"):
        (home / name).symlink_to(ROOT / name)
    up.state = home / ".flywheel"
    up.mlflow = True  # as `make up` runs: the README shows the MLflow UI
    up.start()

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    script = []
    for i, command in enumerate(commands):
        command = command.replace("localhost:8080", f"localhost:{up.api_port}").replace("/tmp/", f"{scratch}/")
        for default in ("localhost:5000", "127.0.0.1:5000"):  # the MLflow UI's
            command = command.replace(default, f"127.0.0.1:{up.mlflow_port}")
        script += [f"printf '\\n{MARK} {i} start\\n'", command, f"printf '\\n{MARK} {i} exit %d\\n' $?"]
    env = {k: v for k, v in up.env.items() if not k.startswith(("AWS_", "FLYWHEEL_"))}  # nothing exported
    shell = "exec 2>&1\n" + "\n".join(script)  # each command's errors beside its output
    run = subprocess.run(["bash", "-c", shell], cwd=home, env=env, capture_output=True, text=True, timeout=900)
    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current = -1
    for line in run.stdout.splitlines():
        if line.startswith(MARK):
            _, index, what, *code = line.split()
            current = int(index)
            if what == "exit":
                codes[current] = int(code[0])
            continue
        outputs.setdefault(current, []).append(line)
    report = "\n".join(f"[{i}] exit {codes.get(i)}: {c}\n    " + "\n    ".join(outputs.get(i, [])[-8:])
                       for i, c in enumerate(commands)) + "\nstderr:\n" + run.stderr[-4000:]  # fmt: skip
    assert len(codes) == len(commands), report
    for i, command in enumerate(commands):
        if refused(command):
            assert codes[i] != 0, report
        else:
            assert codes[i] == 0, report

    # the canary the walkthrough started (the version `drop --wait` said is a canary) is decided by the judge, on
    # the traffic of several keys (the local judge runs every 15 s): its history says who decided
    output = "\n".join(line for lines in outputs.values() for line in lines)
    canary = int(re.findall(r"trained into savings v(\d+): canary", output)[0])

    def history() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(up.cli("models", "--model", "savings", "--history", str(canary),
                                                        "--json", cwd=home))  # fmt: skip
        return found

    events = eventually(history, lambda h: any(e["what"] in DECIDED for e in h), 240,
                        what=f"the judge's verdict on the walkthrough's canary v{canary}")  # fmt: skip
    decision = next(e for e in events if e["what"] in DECIDED)
    assert decision["who"] == "judge" and "production moved" not in decision.get("reason", ""), events  # a verdict

    # the feedback loop closed: the walkthrough's labels were joined and a version trained on them
    s3 = boto3.client("s3", endpoint_url=up.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip

    def trained_on() -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="flywheel-local", Prefix="models/savings/versions/")
        manifests = sorted(o["Key"] for p in pages for o in p.get("Contents", []) if o["Key"].endswith("manifest.json"))
        latest = json.loads(s3.get_object(Bucket="flywheel-local", Key=manifests[-1])["Body"].read())
        return [str(b.get("key", b)) for b in latest["data"]["batches"]]

    eventually(trained_on, lambda keys: any("data/savings/feedback/" in k for k in keys), 240,
               what="a savings version trained on the walkthrough's labels")  # fmt: skip

    # MLflow followed it all (the worker's retrains, the CLI's rollback and promote, the judge): a run per version,
    # and its production alias where Flywheel's is
    mlflow = MlflowClient(up.mlflow_url)

    def mirrored() -> tuple[int, set[str], str | None]:
        production = json.loads(s3.get_object(Bucket="flywheel-local", Key="models/savings/aliases/production.json")
                                ["Body"].read())["version"]  # fmt: skip
        versions = {mv.version: mv.tags["flywheel.version"] for mv in mlflow.search_model_versions("name = 'savings'")}
        alias = mlflow.get_registered_model("savings").aliases.get("production")
        return production, set(versions.values()), versions.get(alias) if alias else None

    state = eventually(mirrored, lambda m: m[2] == str(m[0]), 60, what="MLflow's production alias = Flywheel's")
    assert {"1", "2", "3"} <= state[1], state
    assert up.stop() == 0
