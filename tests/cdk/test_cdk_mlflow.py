"""The MLflow mirror in the synthesized stack: with a server set, the trainer, its Batch job and the judge get the
tracking URI and the FLYWHEEL_MLFLOW_* settings, the three roles (and no other) may read the credentials secret
(by ARN; its value is nowhere) or reach SageMaker's tracking server, and an alarm watches MlflowMirrorFailed;
without one, none of it exists. cdk-nag and cfn-lint stay clean for both kinds of server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from cdk_fixtures import (
    REPO_ROOT,
    InProcessSynth,
    actions,
    joined,
    only,
    synth_with,
    trainer_environment,
)
from test_cdk_mlflow_settings import KEY, SECRET, SERVER, STORE
from test_cdk_nag import _violations

from cdk import mlflow_mirror
from cdk.mlflow_settings import MlflowSettings
from cdk.observability import MIRROR_FAILED_PERIODS, MIRROR_WINDOW_PERIODS

URI = "https://mlflow.example.com/tracking"
URI_CONTEXT = {
    "mlflowTrackingUri": URI,
    "mlflowCredentialsSecretArn": SECRET,
    "mlflowCredentialsSecretKeyArn": KEY,
    "mlflowExperiment": "flywheel-{model}",
    "mlflowRegisteredPrefix": "fw-",
    "mlflowTimeoutSeconds": "4",
    "mlflowBudgetSeconds": "20",
}
SAGEMAKER_CONTEXT = {"mlflowTrackingServerArn": SERVER, "mlflowArtifactStoreUri": STORE}
#: The three that mirror (role logical-id prefixes); the Batch job's execution role only starts the container.
MIRRORING_ROLES = ("TrainerRole", "TrainerJobJobRole", "RolloutJudgeRole")


@pytest.fixture(scope="module")
def with_uri(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    return synth_with(tmp_path_factory.mktemp("cdk-mlflow-uri"), URI_CONTEXT)


@pytest.fixture(scope="module")
def sagemaker(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    """SageMaker's managed MLflow, as if the trainer image had the sagemaker-mlflow plugin (it has not yet)."""
    with pytest.MonkeyPatch.context() as patch:  # for this synth only
        patch.setattr(mlflow_mirror, "plugin_in_image", lambda repo_root: True)
        return synth_with(tmp_path_factory.mktemp("cdk-mlflow-sagemaker"), SAGEMAKER_CONTEXT)


def _environments(synth: InProcessSynth) -> dict[str, dict[str, Any]]:
    """The environment of the trainer Lambda, the Batch job and the judge Lambda."""
    _, job = only(synth.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    _, judge = only(synth.resources("AWS::Lambda::Function"), "RolloutJudgeFunction")
    return {
        "trainer": trainer_environment(synth),
        "job": {e["Name"]: e["Value"] for e in job["Properties"]["ContainerProperties"]["Environment"]},
        "judge": dict(judge["Properties"]["Environment"]["Variables"]),
    }


def _role_ids(synth: InProcessSynth) -> dict[str, str]:
    return {prefix: only(synth.resources("AWS::IAM::Role"), prefix)[0] for prefix in MIRRORING_ROLES}


def _grantees(synth: InProcessSynth, action: str, resource: str) -> set[str]:
    """Logical ids of every role some policy allows `action` (or a wildcard of its service) on `resource`."""
    service = action.split(":")[0]
    out = set()
    for policy in synth.resources("AWS::IAM::Policy").values():
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            if {action, f"{service}:*", "*"} & set(actions(s)) and any(joined(r) in (resource, "*") for r in resources):
                out |= {r["Ref"] for r in policy["Properties"]["Roles"]}
    return out


def _mirror_policy(synth: InProcessSynth) -> dict[str, Any]:
    _, policy = only(synth.resources("AWS::IAM::Policy"), "MlflowMirrorAccess")
    return dict(policy["Properties"])


# --- a server at a URL, credentials from a secret -----------------------------------------------------------


def test_trainer_job_and_judge_get_the_tracking_uri_and_the_settings(with_uri: InProcessSynth):
    expected = {
        "MLFLOW_TRACKING_URI": URI,
        "FLYWHEEL_MLFLOW_EXPERIMENT": "flywheel-{model}",
        "FLYWHEEL_MLFLOW_REGISTERED_PREFIX": "fw-",
        "FLYWHEEL_MLFLOW_TIMEOUT_SECONDS": "4",
        "FLYWHEEL_MLFLOW_BUDGET_SECONDS": "20",
        "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID": SECRET,
    }
    for name, env in _environments(with_uri).items():
        assert {k: v for k, v in env.items() if "MLFLOW" in k} == expected, name


def test_the_secret_is_referenced_never_resolved(with_uri: InProcessSynth):
    text = json.dumps(with_uri.template)
    assert "resolve:secretsmanager" not in text  # no dynamic reference: the value never enters CloudFormation
    assert not any(k.startswith("Mlflow") for k in with_uri.resources("AWS::SecretsManager::Secret"))
    for name, env in _environments(with_uri).items():
        assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"} & set(env), name


def test_only_the_three_that_mirror_may_read_the_secret_and_decrypt_it(with_uri: InProcessSynth):
    roles = _role_ids(with_uri)
    assert _grantees(with_uri, "secretsmanager:GetSecretValue", SECRET) == set(roles.values())
    assert _grantees(with_uri, "kms:Decrypt", KEY) == set(roles.values())
    policy = _mirror_policy(with_uri)
    assert sorted(r["Ref"] for r in policy["Roles"]) == sorted(roles.values())
    statements = policy["PolicyDocument"]["Statement"]
    assert [(actions(s), s["Resource"]) for s in statements] == [
        (["secretsmanager:GetSecretValue"], SECRET),
        (["kms:Decrypt"], KEY),
    ]
    # the key only through Secrets Manager, in the stack's region
    via = statements[1]["Condition"]["StringEquals"]["kms:ViaService"]
    assert joined(via) == 'secretsmanager.{"Ref": "AWS::Region"}.amazonaws.com'


def test_the_policy_is_in_place_before_the_functions_and_the_job_run(with_uri: InProcessSynth):
    policy_id, _ = only(with_uri.resources("AWS::IAM::Policy"), "MlflowMirrorAccess")
    for type_, prefix in (
        ("AWS::Lambda::Function", "TrainerFunction"),
        ("AWS::Lambda::Function", "RolloutJudgeFunction"),
        ("AWS::Batch::JobDefinition", "TrainerJobDefinition"),
    ):
        _, resource = only(with_uri.resources(type_), prefix)
        assert policy_id in resource.get("DependsOn", []), prefix


def test_an_alarm_watches_sustained_mirror_failures_of_trainer_and_judge(with_uri: InProcessSynth):
    topic_id, _ = only(with_uri.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    alarm_id, alarm = only(with_uri.resources("AWS::CloudWatch::Alarm"), "ObservabilityMlflowMirrorFailed")
    props = alarm["Properties"]
    queries = {m["Id"]: m for m in props["Metrics"]}
    (expression,) = [m for m in props["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "FILL(trainer, 0) + FILL(judge, 0)" and expression["ReturnData"] is True
    for query_id, service in (("trainer", "flywheel-trainer"), ("judge", "flywheel-judge")):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": "Flywheel",
            "MetricName": "MlflowMirrorFailed",
            "Dimensions": [{"Name": "service", "Value": service}],  # as the handlers' Powertools metrics
        }
        assert (stat["Stat"], stat["Period"], queries[query_id]["ReturnData"]) == ("Sum", 300, False)
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (MIRROR_WINDOW_PERIODS, MIRROR_FAILED_PERIODS)
    assert (MIRROR_WINDOW_PERIODS, MIRROR_FAILED_PERIODS) == (12, 3)  # 3 five-minute periods with failures in an hour
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == props["OKActions"] == [{"Ref": topic_id}]
    assert "runbook.md#mlflowmirrorfailed" in props["AlarmDescription"]
    assert "## MlflowMirrorFailed" in (REPO_ROOT / "docs" / "runbook.md").read_text()
    _, dashboard = only(with_uri.resources("AWS::CloudWatch::Dashboard"), "ObservabilityDashboard")
    assert alarm_id in joined(dashboard["Properties"]["DashboardBody"])  # in the alarm status widget


def test_the_handlers_count_the_metric_the_alarm_watches():
    for handler in ("lambdas/trainer/handler.py", "lambdas/judge/handler.py"):
        assert 'name="MlflowMirrorFailed"' in (REPO_ROOT / handler).read_text(), handler


def test_no_network_rule_is_added(synth: InProcessSynth, with_uri: InProcessSynth):
    """The Lambdas are outside any VPC and the job's group already allows all egress: nothing changes there."""
    for type_ in ("AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupEgress", "AWS::EC2::SecurityGroupIngress"):
        assert with_uri.resources(type_).keys() == synth.resources(type_).keys(), type_
    for prefix in ("TrainerFunction", "RolloutJudgeFunction"):
        _, function = only(with_uri.resources("AWS::Lambda::Function"), prefix)
        assert "VpcConfig" not in function["Properties"], prefix


def test_a_server_that_asks_for_no_credentials_gets_no_policy():
    from cdk.mlflow_mirror import MlflowMirror

    settings = MlflowSettings.from_mapping({"mlflow_tracking_uri": URI})
    mirror = MlflowMirror(Stack(App(), "S"), "MlflowMirror", settings=settings, repo_root=REPO_ROOT)
    assert mirror.environment["MLFLOW_TRACKING_URI"] == URI
    assert "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID" not in mirror.environment
    assert mirror.statements() == []
    assert mirror.allow([], before=[]) is None
    assert mirror.findings() == []


# --- SageMaker's managed MLflow -------------------------------------------------------------------------------


def test_sagemaker_the_tracking_uri_is_the_server_arn_and_no_secret(sagemaker: InProcessSynth):
    for name, env in _environments(sagemaker).items():
        mirror = {k: v for k, v in env.items() if "MLFLOW" in k}
        assert mirror["MLFLOW_TRACKING_URI"] == SERVER, name
        assert "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID" not in mirror, name
        assert mirror["FLYWHEEL_MLFLOW_EXPERIMENT"] == "{model}", name  # the core's defaults, set explicitly


def test_sagemaker_the_three_reach_that_server_and_its_artifact_store_only(sagemaker: InProcessSynth):
    roles = _role_ids(sagemaker)
    policy = _mirror_policy(sagemaker)
    assert sorted(r["Ref"] for r in policy["Roles"]) == sorted(roles.values())
    grants = [(actions(s), s["Resource"], s.get("Condition")) for s in policy["PolicyDocument"]["Statement"]]
    assert grants == [
        (["sagemaker-mlflow:*"], SERVER, None),
        (
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "arn:aws:s3:::ml-artifacts-123456789012/flywheel/*",
            None,
        ),
        (["s3:ListBucket"], "arn:aws:s3:::ml-artifacts-123456789012", {"StringLike": {"s3:prefix": ["flywheel/*"]}}),
    ]
    assert _grantees(sagemaker, "sagemaker-mlflow:CreateRun", SERVER) == set(roles.values())
    assert not any("secretsmanager" in json.dumps(s) for s in policy["PolicyDocument"]["Statement"])


def test_sagemaker_the_acknowledged_nag_findings_are_exactly_the_real_ones(tmp_path: Path):
    """Without the mirror's acknowledgments the pack reports exactly the findings it computes: none stale, none
    missing (the acknowledgments of cdk/nag.py stay on)."""
    from cdk.mlflow_mirror import MlflowMirror

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlflow_mirror, "plugin_in_image", lambda repo_root: True)
        patch.setattr(MlflowMirror, "findings", lambda self: [])
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            synth_with(tmp_path, SAGEMAKER_CONTEXT)
    reported = {
        (rule, path.removesuffix("/Resource")) for rule, path in _violations(tmp_path / "validation-report.json")
    }
    settings = MlflowSettings.from_mapping({"mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": STORE})
    stack = Stack(App(), "Flywheel-dev")
    expected = MlflowMirror(stack, "MlflowMirror", settings=settings, repo_root=_lock_dir(tmp_path, plugin=True))
    assert reported == {(f.rule, f"Flywheel-dev/{f.path}") for f in expected.findings()}
    assert "MlflowMirror/Access" in {f.path for f in expected.findings()}


def _lock_dir(tmp: Path, *, plugin: bool) -> Path:
    root = tmp / ("with-plugin" if plugin else "without-plugin")
    lock = root / mlflow_mirror.TRAINER_LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(
        "mlflow-skinny==3.17.2 \\\n    --hash=sha256:00\n" + ("sagemaker-mlflow==0.2.0 \\\n" if plugin else "")
    )
    return root


def test_sagemaker_needs_the_plugin_in_the_trainer_image(tmp_path: Path):
    """Without sagemaker-mlflow MLflow refuses an arn: URI, so every pass would fail: the synth stops instead."""
    from cdk.context import SettingsError
    from cdk.mlflow_mirror import MlflowMirror

    settings = MlflowSettings.from_mapping({"mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": STORE})
    with pytest.raises(SettingsError, match=r"'mlflowTrackingServerArn': the trainer image has no sagemaker-mlflow"):
        MlflowMirror(Stack(App(), "S"), "MlflowMirror", settings=settings, repo_root=_lock_dir(tmp_path, plugin=False))
    assert MlflowMirror(Stack(App(), "S"), "M", settings=settings, repo_root=_lock_dir(tmp_path, plugin=True))
    # the real image: today's lock has mlflow-skinny only (checked, so this test says when that changes)
    assert not mlflow_mirror.plugin_in_image(REPO_ROOT)


# --- both, and neither ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["with_uri", "sagemaker"])
def test_cdk_nag_and_cfn_lint_are_clean(variant: str, request: pytest.FixtureRequest):
    synth: InProcessSynth = request.getfixturevalue(variant)
    report = synth.outdir / "validation-report.json"
    assert not report.exists() or _violations(report) == set()
    result = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", str(synth.outdir / "Flywheel-dev.template.json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    findings = json.loads(result.stdout or "[]")
    assert not [f for f in findings if f["Level"] == "Error"], json.dumps(findings, indent=1)[:4000]
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}, json.dumps(findings, indent=1)[:4000]


def test_without_a_server_none_of_it_exists(synth: InProcessSynth):
    for name, env in _environments(synth).items():
        assert not [k for k in env if "MLFLOW" in k], name
    assert not [k for k in synth.resources("AWS::IAM::Policy") if k.startswith("MlflowMirror")]
    assert not [k for k in synth.resources("AWS::CloudWatch::Alarm") if "MlflowMirror" in k]
    assert not synth.stack.node.try_find_child("MlflowMirror")
    assert "MlflowMirrorFailed" not in json.dumps(synth.template)
