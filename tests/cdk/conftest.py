"""Session fixtures for the CDK tests: one in-process synth (with cdk-nag) and one `cdk synth` by the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
from cdk_fixtures import (
    CDK_CLI,
    PROD_CONTEXT,
    REPO_ROOT,
    STACK_NAME,
    CliSynth,
    InProcessSynth,
    cdk_json_context,
    offline_env,
)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    """The default app built in-process exactly as `cdk synth` builds it (cdk-nag included), synthesized once."""
    from aws_cdk import App

    from cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk-out")
    app, stack = build_app(App(outdir=str(outdir), context=cdk_json_context()))
    app.synth()  # raises if cdk-nag reports an unacknowledged finding
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return InProcessSynth(outdir=outdir, template=template, stack=stack)


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    """A production-like deployment (PROD_CONTEXT), synthesized once; cdk-nag must pass for it too."""
    from aws_cdk import App

    from cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk-prod")
    app, stack = build_app(App(outdir=str(outdir), context={**cdk_json_context(), **PROD_CONTEXT}))
    app.synth()
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return InProcessSynth(outdir=outdir, template=template, stack=stack)


@pytest.fixture(scope="session")
def template(synth: InProcessSynth) -> Any:
    """`aws_cdk.assertions.Template` of the default stack."""
    from aws_cdk.assertions import Template

    return Template.from_json(synth.template)


@pytest.fixture(scope="session")
def cli_synth(tmp_path_factory: pytest.TempPathFactory) -> CliSynth:
    """`cdk synth` from the repository root with the real CLI, offline: no credentials, no lookups, no Docker.

    A `docker` that records its arguments and fails comes first on PATH: image assets are built at deploy only.
    """
    if not CDK_CLI.exists():
        pytest.fail(f"the CDK CLI is missing at {CDK_CLI}: run `make tools` (scripts/install-tools.sh)")
    tmp = tmp_path_factory.mktemp("cdk-cli")
    fake_bin = tmp / "bin"
    fake_bin.mkdir()
    docker_log = tmp / "docker-calls.log"
    fake_docker = fake_bin / "docker"
    fake_docker.write_text(f'#!/bin/sh\necho "$*" >> "{docker_log}"\nexit 1\n')
    fake_docker.chmod(0o755)
    env = offline_env(tmp)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    outdir = tmp / "cdk.out"
    cmd = [str(CDK_CLI), "synth", "--no-lookups", "--no-notices", "--no-version-reporting", "--quiet"]
    cmd += ["--output", str(outdir)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"cdk synth failed ({result.returncode}):\n{output[-6000:]}"
    template = json.loads((outdir / f"{STACK_NAME}.template.json").read_text())
    calls = docker_log.read_text().splitlines() if docker_log.exists() else []
    return CliSynth(outdir=outdir, template=template, output=output, docker_calls=calls)


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of kubectl (the tests render k8s/overlays/eks as the stack does)."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is required to render k8s/overlays/eks")
    return path
