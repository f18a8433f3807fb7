"""The GitHub workflows pass actionlint and keep their guarantees; the Dockerfiles pass hadolint and build
small non-root images with pinned bases."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
DOCKERFILES = [REPO / "app" / "Dockerfile", REPO / "lambdas" / "trainer" / "Dockerfile"]


def tool(name: str) -> str:
    """A linter installed by requirements-dev.txt (next to this interpreter) or on PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make venv` (requirements-dev.txt)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def runs(doc: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in steps(doc))


def uses(doc: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(doc) if str(s.get("uses", "")).startswith(action + "@")]


def test_the_two_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "deploy.yml"}


def test_workflows_pass_actionlint() -> None:
    # actionlint also runs shellcheck over every `run:` script when shellcheck is installed (make tools).
    result = run(tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.head_commit.mesage }}\n"
        "      - uses: actions/checkout@v7\n        with:\n          fetch_depth: 1\n"
    )
    result = run(tool("actionlint"), "-no-color", str(broken))
    assert result.returncode != 0
    assert "fetch_depth" in result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_least_privilege_and_bounded(path: Path) -> None:
    doc = load(path)
    assert doc["permissions"] == {"contents": "read"}, "default token: read-only"
    for name, job in doc["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout-minutes"
        assert set(job.get("permissions", {}).values()) <= {"read", "write"}
    for step in uses(doc, "actions/checkout"):
        assert step.get("with", {}).get("persist-credentials") is False
    for step in uses(doc, "actions/setup-python"):
        assert step["with"].get("cache") == "pip"


def test_ci_runs_lint_types_tests_synth_and_the_offline_checks() -> None:
    doc = load(REPO / ".github" / "workflows" / "ci.yml")
    assert {"push", "pull_request"} <= set(doc["on"])
    script = runs(doc)
    for command in ("make lint", "make test", "cdk synth", "pytest tests/k8s tests/monitoring tests/ci"):
        assert command in script, command
    assert "prometheus" in script, "promtool and prometheus come from the Debian/Ubuntu package"
    assert uses(doc, "actions/setup-node")[0]["with"].get("cache") == "npm"
    assert all("id-token" not in job.get("permissions", {}) for job in doc["jobs"].values())


def test_deploy_assumes_a_role_builds_deploys_and_smoke_tests() -> None:
    doc = load(REPO / ".github" / "workflows" / "deploy.yml")
    assert doc["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in doc["on"]
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"contents": "read", "id-token": "write"}, "OIDC only where it is used"
    (creds,) = uses(doc, "aws-actions/configure-aws-credentials")
    assert "role-to-assume" in creds["with"]
    assert not any(k in str(doc) for k in ("aws-access-key-id", "AWS_SECRET_ACCESS_KEY"))
    builds = uses(doc, "docker/build-push-action")
    assert builds and all(b["with"]["file"] == "app/Dockerfile" and b["with"]["push"] for b in builds)
    script = runs(doc)
    for command in ("cdk deploy", "rollout status", "scripts/smoke_test.py"):
        assert command in script, command
    # The model and schema the stack gives trainer and pods are the ones the job checks and smoke-tests.
    assert job["env"]["MODEL_NAME"] == "${{ vars.FLYWHEEL_MODEL_NAME || 'savings' }}"
    assert job["env"]["SCHEMA"] == "${{ vars.FLYWHEEL_SCHEMA || 'savings' }}"
    (deploy,) = [s["run"] for s in steps(doc) if "cdk deploy" in s.get("run", "")]
    for flag in ('-c modelName="$MODEL_NAME"', '-c schema="$SCHEMA"'):
        assert flag in deploy, flag
    assert "models/$MODEL_NAME/aliases/production.json" in script and '--schema "$SCHEMA"' in script
    assert doc["concurrency"]["cancel-in-progress"] is False


def test_dockerfiles_pass_hadolint() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "info", *map(str, DOCKERFILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nRUN pip install numpy\n")
    result = run(tool("hadolint"), str(bad))
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def stages(dockerfile: Path) -> list[str]:
    """The Dockerfile's build stages, as text, the final one last."""
    text = dockerfile.read_text(encoding="utf-8")
    return [s for s in re.split(r"(?m)^(?=FROM )", text) if s.startswith("FROM ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_image_is_multi_stage_pinned_and_non_root(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "multi-stage: dependencies are built apart from the final image"
    for stage in all_stages:
        base = stage.split()[1]
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", base), f"unpinned base {base}"
    final = all_stages[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the final image runs as non-root"
    assert not re.search(r"(?m)apt-get install|build-essential|gcc", final), "no build tools in the final image"
    assert "pip uninstall" in final, "the final image drops pip/setuptools/wheel"
    assert "COPY --from=build /opt/venv" in final


def test_app_image_serves_with_one_numeric_thread() -> None:
    final = stages(REPO / "app" / "Dockerfile")[-1]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert re.search(rf"\b{var}=1\b", final), var
    assert 'CMD ["flywheel", "serve", "--host", "0.0.0.0", "--port", "8080"]' in final


def test_trainer_image_runs_the_lambda_handler() -> None:
    final = stages(REPO / "lambdas" / "trainer" / "Dockerfile")[-1]
    code = "\n".join(line for line in final.splitlines() if not line.lstrip().startswith("#"))
    assert "OMP_NUM_THREADS" not in code, "training uses every vCPU"
    # `python -m` + a module: the Lambda runs the image's CMD, a Batch job replaces only the command.
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m"]' in final
    assert 'CMD ["awslambdaric", "lambdas.trainer.handler.handler"]' in final


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*")] == "*", "deny by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"requirements.lock", "pyproject.toml", "README.md", "flywheel", "app", "lambdas"}


PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_sha_with_its_tag(path: Path) -> None:
    """A tag can be moved to other code; a commit SHA cannot. The comment keeps the release readable."""
    lines = [ln.split("uses:", 1)[1].strip() for ln in path.read_text().splitlines() if "uses:" in ln]
    assert lines, f"{path.name} uses no action?"
    unpinned = [u for u in lines if not PINNED.match(u)]
    assert not unpinned, f"{path.name}: pin to a full commit SHA with '# vX.Y.Z': {unpinned}"


def test_the_pin_check_would_catch_a_tag() -> None:
    assert not PINNED.match("actions/checkout@v7")
    assert not PINNED.match("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1")  # no tag comment
    assert PINNED.match("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"\[.*\]", "", name).lower()] = version.split()[0]
    return pins


def test_deploy_runs_only_from_main_and_installs_only_what_it_needs() -> None:
    doc = load(REPO / ".github" / "workflows" / "deploy.yml")
    (job,) = doc["jobs"].values()
    assert job["if"] == "github.ref == 'refs/heads/main'"
    text = runs(doc)
    assert "make deploy-tools" in text
    assert not re.search(r"make (venv|tools|test)\b", text), "the deploy job installs the test tool chain"
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\ndeploy-tools:", 1)[1].split("\n\n", 1)[0]
    assert "requirements-deploy.txt" in target and "requirements-dev.txt" not in target


def test_deploy_requirements_pin_what_the_tests_pin() -> None:
    deploy = _pins(REPO / "requirements-deploy.txt")
    tested = {**_pins(REPO / "requirements.txt"), **_pins(REPO / "requirements-dev.txt")}
    assert deploy and {k: v for k, v in deploy.items() if tested.get(k) != v} == {}


#: What only the API/UI image needs: the UI, its sign-in, the serving fast path. The trainer's image leaves them out.
SERVING_ONLY = {"streamlit", "authlib", "pyjwt", "numba", "llvmlite"}
LOCKS = {
    "app": (REPO / "requirements.lock", [REPO / "requirements.txt"], REPO / "app" / "Dockerfile"),
    "trainer": (
        REPO / "lambdas" / "trainer" / "requirements.lock",
        [REPO / "requirements.txt", REPO / "lambdas" / "trainer" / "requirements-image.txt"],
        REPO / "lambdas" / "trainer" / "Dockerfile",
    ),
}


@pytest.mark.parametrize("image", sorted(LOCKS))
def test_images_install_a_hashed_lock_that_matches_the_requirements(image: str) -> None:
    lock, inputs, dockerfile = LOCKS[image]
    text = lock.read_text()
    entries = [e for e in text.replace("\\\n", " ").splitlines() if e.strip() and not e.lstrip().startswith("#")]
    assert entries and all("--hash=sha256:" in e for e in entries), f"{lock.name}: a requirement without a hash"
    locked = _pins(lock)
    wanted = {k: v for path in inputs for k, v in _pins(path).items() if not (image == "trainer" and k in SERVING_ONLY)}
    stale = {k: (v, locked.get(k)) for k, v in wanted.items() if locked.get(k) != v}
    assert not stale, f"{lock.relative_to(REPO)} is stale (requirement: (wanted, locked)): {stale}; run `make lock`"
    if image == "trainer":
        assert not SERVING_ONLY & set(locked), "the trainer image carries no UI and no serving fast path"
    code = dockerfile.read_text()
    assert "--require-hashes" in code and f"-r {lock.name}" in code
    assert "COPY requirements.txt" not in code, "the image installs the lock, not the unhashed pins"
