"""Cluster Autoscaler: the pinned chart with auto-discovery, its Pod Identity role and least-privilege IAM; and the
cdk-nag acknowledgments that exist with some context only (the Cognito deployment's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App
from cdk_fixtures import REPO_ROOT, InProcessSynth, actions, cdk_json_context, joined, only, role_statements

from cdk.access_settings import AccessSettings
from cdk.app import add_nag_checks
from cdk.nag import FINDINGS, OPTIONAL_FINDINGS
from cdk.node_autoscaler import (
    CHART_REPOSITORY,
    CHART_VERSION,
    DESCRIBE_ACTIONS,
    IMAGE_TAGS,
    NAMESPACE,
    SCALE_ACTIONS,
    SERVICE_ACCOUNT,
)
from cdk.settings import SUPPORTED_KUBERNETES_VERSIONS, DeploySettings
from cdk.stack import FlywheelStack

CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/0b3d1c2e-1111-2222-3333-444455556666"


def test_chart_is_pinned_and_discovers_this_clusters_node_groups(synth: InProcessSynth):
    _, chart = only(synth.resources("Custom::AWSCDK-EKS-HelmChart"), "ServingNodeAutoscalerChart")
    props = chart["Properties"]
    assert (props["Chart"], props["Repository"], props["Version"]) == ("cluster-autoscaler", CHART_REPOSITORY, "9.56.0")
    assert CHART_VERSION == "9.56.0"
    assert props["Namespace"] == NAMESPACE
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    text = joined(props["Values"]).replace(json.dumps({"Ref": cluster_id}), "CLUSTER")
    values = json.loads(text.replace(json.dumps({"Ref": "AWS::Region"}), "REGION"))
    assert values["awsRegion"] == "REGION"
    assert values["autoDiscovery"] == {"clusterName": "CLUSTER"}
    assert values["cloudProvider"] == "aws"
    assert values["rbac"]["serviceAccount"] == {"create": True, "name": SERVICE_ACCOUNT}
    assert values["image"]["tag"] == IMAGE_TAGS["1.35"]  # the minor of the default kubernetesVersion


def test_an_image_for_every_supported_kubernetes_version():
    assert set(IMAGE_TAGS) == set(SUPPORTED_KUBERNETES_VERSIONS)
    for version, tag in IMAGE_TAGS.items():
        assert tag.startswith(f"v{version}."), "Cluster Autoscaler's minor must match the cluster's"


def test_pod_identity_role_has_least_privilege(synth: InProcessSynth):
    role_id, role = only(synth.resources("AWS::IAM::Role"), "ServingNodeAutoscalerRole")
    principals = {s["Principal"]["Service"] for s in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]}
    assert principals == {"pods.eks.amazonaws.com"}
    (association,) = [
        a["Properties"]
        for a in synth.resources("AWS::EKS::PodIdentityAssociation").values()
        if a["Properties"]["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    ]
    assert (association["Namespace"], association["ServiceAccount"]) == (NAMESPACE, SERVICE_ACCOUNT)
    statements = role_statements(synth, "ServingNodeAutoscalerRole")
    by_action = {a: s for s in statements for a in actions(s)}
    assert set(by_action) == {*DESCRIBE_ACTIONS, *SCALE_ACTIONS, "eks:DescribeNodegroup"}
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in DESCRIBE_ACTIONS)
    nodegroup_id, _ = only(synth.resources("AWS::EKS::Nodegroup"), "ServingClusterNodegroupNodes")
    assert by_action["eks:DescribeNodegroup"]["Resource"] == {"Fn::GetAtt": [nodegroup_id, "Arn"]}
    # The writes only on Auto Scaling groups tagged as this cluster's (CfnJson resolves the tag key at deploy).
    for action in SCALE_ACTIONS:
        condition = by_action[action]["Condition"]["StringEquals"]
        tag_id, _ = only(synth.resources("Custom::AWSCDKCfnJson"), "ServingNodeAutoscalerOwnedTag")
        assert condition == {"Fn::GetAtt": [tag_id, "Value"]}
    _, tag = only(synth.resources("Custom::AWSCDKCfnJson"), "ServingNodeAutoscalerOwnedTag")
    assert joined(tag["Properties"]["Value"]) == (
        '{"aws:ResourceTag/k8s.io/cluster-autoscaler/' + json.dumps({"Ref": _cluster_id(synth)}) + '":"owned"}'
    )


def _cluster_id(synth: InProcessSynth) -> str:
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    return cluster_id


def test_managed_node_group_keeps_its_hardened_launch_template(synth: InProcessSynth):
    """Cluster Autoscaler scales the managed node group: the launch template (IMDSv2, hop limit 1) stays."""
    _, nodegroup = only(synth.resources("AWS::EKS::Nodegroup"), "ServingClusterNodegroupNodes")
    assert "LaunchTemplate" in nodegroup["Properties"]
    assert nodegroup["Properties"]["ScalingConfig"]["MaxSize"] > nodegroup["Properties"]["ScalingConfig"]["MinSize"]


@pytest.mark.parametrize("context", [{"uiDomain": "ui.example.com", "certificateArn": CERT}])
def test_every_optional_acknowledgment_matches_a_real_finding(tmp_path: Path, context: dict[str, str]):
    """Without acknowledgments, the Cognito deployment reports exactly FINDINGS and OPTIONAL_FINDINGS."""
    app = App(outdir=str(tmp_path), context={**cdk_json_context(), **context})
    access = AccessSettings.from_context(app.node)
    stack = FlywheelStack(app, "Flywheel-dev", settings=DeploySettings(), repo_root=REPO_ROOT, access=access)
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    data = json.loads((tmp_path / "validation-report.json").read_text())
    reported = {
        (v["ruleName"], c["constructPath"].removesuffix("/Resource"))
        for plugin in data["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    }
    acknowledged = {(f.rule, f"{stack.stack_name}/{f.path}") for f in (*FINDINGS, *OPTIONAL_FINDINGS)}
    assert reported == acknowledged
