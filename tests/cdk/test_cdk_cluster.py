"""The serving cluster: EKS, Pod Identity, the app manifests, kube-prometheus-stack."""

from __future__ import annotations

import json
import re

from aws_cdk.assertions import Match, Template
from cdk_fixtures import REPO_ROOT, InProcessSynth, only

from cdk.monitoring_assets import chart_values, dashboards
from cdk.settings import DeploySettings

DEFAULTS = DeploySettings()

# --- EKS -------------------------------------------------------------------------------------------------


def test_cluster_version_logging_and_managed_nodes(template: Template):
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Version": DEFAULTS.kubernetes_version,
            "Logging": {
                "ClusterLogging": {
                    "EnabledTypes": [
                        {"Type": t} for t in ("api", "audit", "authenticator", "controllerManager", "scheduler")
                    ]
                }
            },
            "AccessConfig": Match.object_like({"AuthenticationMode": "API"}),
        },
    )
    template.has_resource_properties(
        "AWS::EKS::Nodegroup",
        {
            "InstanceTypes": list(DEFAULTS.node_instance_types),
            "ScalingConfig": {
                "MinSize": DEFAULTS.node_min_size,
                "DesiredSize": DEFAULTS.node_desired_size,
                "MaxSize": DEFAULTS.node_max_size,
            },
            "AmiType": "AL2023_x86_64_STANDARD",
            "CapacityType": "ON_DEMAND",
            "DiskSize": Match.absent(),  # in the launch template (next test)
        },
    )
    template.resource_count_is("AWS::EKS::Nodegroup", 1)


def test_nodes_require_imdsv2_with_hop_limit_1_and_an_encrypted_root_volume(synth: InProcessSynth):
    template_id, launch_template = only(synth.resources("AWS::EC2::LaunchTemplate"), "ServingNodeLaunchTemplate")
    data = launch_template["Properties"]["LaunchTemplateData"]
    # Pods cannot reach the node role's credentials: IMDSv2's token answer does not survive a second hop.
    assert data["MetadataOptions"] == {
        "HttpEndpoint": "enabled",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
    }
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",  # the AL2023 EKS AMI's root volume
            "Ebs": {
                "VolumeSize": DEFAULTS.node_disk_size_gib,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }
    ]
    _, nodegroup = only(synth.resources("AWS::EKS::Nodegroup"), "ServingClusterNodegroupNodes")
    assert nodegroup["Properties"]["LaunchTemplate"] == {
        "Id": {"Ref": template_id},
        "Version": {"Fn::GetAtt": [template_id, "LatestVersionNumber"]},
    }


def test_api_endpoint_is_private_by_default(template: Template):
    """No clusterEndpointCidrs: no public endpoint at all (the kubectl handler runs in the VPC)."""
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "ResourcesVpcConfig": Match.object_like(
                {"EndpointPublicAccess": False, "EndpointPrivateAccess": True, "PublicAccessCidrs": Match.absent()}
            )
        },
    )


def test_vpc_cni_enforces_network_policies(synth: InProcessSynth):
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    _, addon = only(synth.resources("AWS::EKS::Addon"), "ServingVpcCni")
    props = addon["Properties"]
    assert (props["AddonName"], props["ClusterName"]) == ("vpc-cni", {"Ref": cluster_id})
    assert json.loads(props["ConfigurationValues"]) == {"enableNetworkPolicy": "true"}
    assert props["ResolveConflicts"] == "OVERWRITE"  # takes over the VPC CNI that EKS installs


def test_metrics_server_add_on_feeds_the_hpa_once_nodes_exist(synth: InProcessSynth):
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    nodegroup_id, _ = only(synth.resources("AWS::EKS::Nodegroup"), "ServingClusterNodegroupNodes")
    _, addon = only(synth.resources("AWS::EKS::Addon"), "ServingMetricsServer")
    assert (addon["Properties"]["AddonName"], addon["Properties"]["ClusterName"]) == (
        "metrics-server",
        {"Ref": cluster_id},
    )
    assert nodegroup_id in addon["DependsOn"]
    names = sorted(a["Properties"]["AddonName"] for a in synth.resources("AWS::EKS::Addon").values())
    assert names == ["eks-pod-identity-agent", "metrics-server", "vpc-cni"]


def test_kubectl_layer_matches_the_kubernetes_version(synth: InProcessSynth):
    _, layer = only(synth.resources("AWS::Lambda::LayerVersion"), "ServingKubectlLayer")
    description = layer["Properties"]["Description"]  # e.g. "/opt/kubectl/kubectl 1.35.2; /opt/helm/helm 4.1.3"
    match = re.search(r"kubectl (\d+\.\d+)\.\d+", description)
    assert match, description
    kubectl_minor = match.group(1)
    major, minor = (int(x) for x in DEFAULTS.kubernetes_version.split("."))
    assert kubectl_minor in {f"{major}.{minor - 1}", f"{major}.{minor}", f"{major}.{minor + 1}"}  # skew policy


def test_pod_identity_binds_the_app_service_account(synth: InProcessSynth, template: Template):
    role_id, role = only(synth.resources("AWS::IAM::Role"), "ServingAppPodRole")
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {
            "ClusterName": {"Ref": cluster_id},
            "Namespace": "flywheel",
            "ServiceAccount": "flywheel-app",
            "RoleArn": {"Fn::GetAtt": [role_id, "Arn"]},
        },
    )
    template.has_resource_properties("AWS::EKS::Addon", {"AddonName": "eks-pod-identity-agent"})
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    actions = {a for s in trust for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"sts:AssumeRole", "sts:TagSession"}
    assert all(s["Principal"] == {"Service": "pods.eks.amazonaws.com"} for s in trust)


def test_pod_identity_binds_the_ui_service_account_to_a_role_of_its_own(synth: InProcessSynth):
    associations = synth.resources("AWS::EKS::PodIdentityAssociation")
    cluster_id, _ = only(synth.resources("AWS::EKS::Cluster"), "ServingCluster")
    api_role_id, _ = only(synth.resources("AWS::IAM::Role"), "ServingAppPodRole")
    ui_role_id, ui_role = only(synth.resources("AWS::IAM::Role"), "ServingUiPodRole")
    _, ui = only(associations, "ServingUiPodIdentity")
    assert {k: v for k, v in ui["Properties"].items() if k != "Tags"} == {  # stack-wide tags aside
        "ClusterName": {"Ref": cluster_id},
        "Namespace": "flywheel",
        "ServiceAccount": "flywheel-ui",
        "RoleArn": {"Fn::GetAtt": [ui_role_id, "Arn"]},
    }
    agent_id, _ = only(synth.resources("AWS::EKS::Addon"), "ServingCluster")
    assert agent_id in ui["DependsOn"]
    # One association per ServiceAccount, each with its own role; the API's keeps its role.
    bound = {a["Properties"]["ServiceAccount"]: a["Properties"]["RoleArn"] for a in associations.values()}
    autoscaler_role_id, _ = only(synth.resources("AWS::IAM::Role"), "ServingNodeAutoscalerRole")
    assert bound == {
        "flywheel-app": {"Fn::GetAtt": [api_role_id, "Arn"]},
        "flywheel-ui": {"Fn::GetAtt": [ui_role_id, "Arn"]},
        "cluster-autoscaler": {"Fn::GetAtt": [autoscaler_role_id, "Arn"]},  # kube-system (test_cdk_autoscaler)
    }
    trust = ui_role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    actions = {a for s in trust for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"sts:AssumeRole", "sts:TagSession"}
    assert all(s["Principal"] == {"Service": "pods.eks.amazonaws.com"} for s in trust)
    assert "ManagedPolicyArns" not in ui_role["Properties"]


def test_app_manifest_waits_for_pod_identity_and_the_chart_crds(synth: InProcessSynth):
    _, app = only(synth.resources("Custom::AWSCDK-EKS-KubernetesResource"), "ServingClustermanifestApp")
    association_id, _ = only(synth.resources("AWS::EKS::PodIdentityAssociation"), "ServingAppPodIdentity")
    ui_association_id, _ = only(synth.resources("AWS::EKS::PodIdentityAssociation"), "ServingUiPodIdentity")
    chart_id, _ = only(synth.resources("Custom::AWSCDK-EKS-HelmChart"), "MonitoringChart")
    assert association_id in app["DependsOn"]
    assert ui_association_id in app["DependsOn"]
    assert chart_id in app["DependsOn"]  # the overlay has a ServiceMonitor: its CRD comes with the chart


def test_kube_prometheus_stack_chart_pinned_with_repo_values_and_rules(synth: InProcessSynth):
    _, chart = only(synth.resources("Custom::AWSCDK-EKS-HelmChart"), "MonitoringChart")
    props = chart["Properties"]
    assert props["Chart"] == "kube-prometheus-stack"
    assert props["Repository"] == "https://prometheus-community.github.io/helm-charts"
    assert props["Version"] == DEFAULTS.kube_prometheus_stack_version
    assert props["Release"] == "kube-prometheus-stack"
    assert props["Namespace"] == "monitoring"
    values = json.loads(props["Values"])
    assert values == chart_values(REPO_ROOT / "monitoring")  # the values file as it is, plus the rules
    groups = values["additionalPrometheusRulesMap"]["flywheel"]["groups"]
    assert groups and all(rule.get("alert") or rule.get("record") for g in groups for rule in g["rules"])


def test_every_grafana_dashboard_ships_as_a_labelled_config_map(synth: InProcessSynth):
    manifests = synth.resources("Custom::AWSCDK-EKS-KubernetesResource")
    shipped = {}
    for resource in manifests.values():
        manifest = resource["Properties"]["Manifest"]
        if not isinstance(manifest, str):
            continue
        for doc in json.loads(manifest):
            if doc["kind"] == "ConfigMap" and doc["metadata"]["labels"].get("grafana_dashboard") == "1":
                assert doc["metadata"]["namespace"] == "monitoring"
                shipped.update(doc["data"])
    expected = {f"{d.name}.json": d.json_text for d in dashboards(REPO_ROOT / "monitoring")}
    assert shipped == expected
