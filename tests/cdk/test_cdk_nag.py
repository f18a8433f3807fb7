"""cdk-nag's AwsSolutions pack: the stack is clean, and every acknowledged finding is real and explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from cdk_fixtures import REPO_ROOT, InProcessSynth, cdk_json_context

from cdk.app import add_nag_checks
from cdk.nag import FINDINGS
from cdk.settings import DeploySettings
from cdk.stack import FlywheelStack


def _violations(report: Path) -> set[tuple[str, str]]:
    """(rule id, construct path) of every violation in a policy-validation report."""
    data = json.loads(report.read_text())
    return {
        (v["ruleName"], c["constructPath"])
        for plugin in data["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    }


def test_stack_passes_aws_solutions_checks(synth: InProcessSynth):
    # The synth fixture already raised if an error-level finding were left; warnings must be absent too.
    report = synth.outdir / "validation-report.json"
    assert not report.exists() or _violations(report) == set()


def test_the_checks_are_really_on(tmp_path: Path):
    """Negative control: the same registration flags a bucket without TLS enforcement or access logs."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Control")
    s3.Bucket(stack, "Careless")
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    rules = {rule for rule, _ in _violations(tmp_path / "validation-report.json")}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_every_acknowledgment_matches_a_real_finding(tmp_path: Path):
    """Without the acknowledgments the pack reports exactly the listed findings: none stale, none missing."""
    app = App(outdir=str(tmp_path), context=cdk_json_context())
    stack = FlywheelStack(app, "Flywheel-dev", settings=DeploySettings(), repo_root=REPO_ROOT)
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    found = _violations(tmp_path / "validation-report.json")
    # A finding on a resource is reported at its CfnResource, below the construct the acknowledgment names.
    acknowledged = {(f.rule, f"{stack.stack_name}/{f.path}") for f in FINDINGS}
    reported = {(rule, path.removesuffix("/Resource")) for rule, path in found}
    assert reported == acknowledged


def test_every_acknowledgment_has_a_reason_and_is_documented():
    deploy_doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for finding in FINDINGS:
        assert len(finding.reason) >= 60, finding
        rule = finding.rule.split("[")[0]
        assert rule in deploy_doc, f"{rule} is not explained in docs/deploy.md"
