"""Cluster Autoscaler for the managed node group: Helm chart, Pod Identity role, least-privilege IAM.

Chosen over EKS Auto Mode and Karpenter because it scales the managed node group we already have, with its
hardened launch template (IMDSv2, hop limit 1, encrypted gp3 root): Auto Mode and Karpenter would replace node
management (their own node classes and AMIs), so that hardening would have to be redone (docs/security.md).

Managed node groups tag their Auto Scaling group for auto-discovery
(`k8s.io/cluster-autoscaler/enabled`, `k8s.io/cluster-autoscaler/<cluster>` = `owned`): nothing to tag here.
"""

from __future__ import annotations

from typing import cast

from aws_cdk import Aws, CfnJson, Duration
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

CHART = "cluster-autoscaler"
CHART_REPOSITORY = "https://kubernetes.github.io/autoscaler"
#: Pinned chart version; the image below is set per Kubernetes minor (CA's minor must match the cluster's).
CHART_VERSION = "9.56.0"
IMAGE_TAGS = {"1.34": "v1.34.0", "1.35": "v1.35.2", "1.36": "v1.36.1"}
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
#: Read-only calls Cluster Autoscaler makes to discover groups and instance shapes (no resource-level scoping
#: exists for these Describe/Get actions).
DESCRIBE_ACTIONS = [
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
]
#: The only writes, allowed on Auto Scaling groups tagged as this cluster's.
SCALE_ACTIONS = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]


class ClusterAutoscaler(Construct):
    """The chart in kube-system, with auto-discovery by cluster name and its own Pod Identity role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        nodegroup: eks.Nodegroup,
        kubernetes_version: str,
    ) -> None:
        super().__init__(scope, construct_id)
        cluster_name = cluster.cluster_name
        principal = iam.ServicePrincipal("pods.eks.amazonaws.com")
        self.role = iam.Role(
            self, "Role", assumed_by=principal, description="Cluster Autoscaler: scale this cluster's node group"
        )
        self.role.assume_role_policy.add_statements(  # type: ignore[union-attr]
            iam.PolicyStatement(actions=["sts:TagSession"], principals=[principal])
        )
        # The tag key holds the cluster's name, a token until deploy: CfnJson lets a token be a condition key.
        owned = CfnJson(self, "OwnedTag", value={f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"})
        for statement in (
            iam.PolicyStatement(actions=DESCRIBE_ACTIONS, resources=["*"]),
            iam.PolicyStatement(actions=["eks:DescribeNodegroup"], resources=[nodegroup.nodegroup_arn]),
            iam.PolicyStatement(actions=SCALE_ACTIONS, resources=["*"], conditions={"StringEquals": owned}),
        ):
            self.role.add_to_principal_policy(statement)
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        if (agent := cluster.eks_pod_identity_agent) is not None:
            self.pod_identity.node.add_dependency(agent)
        self.chart = eks.HelmChart(
            self,
            "Chart",
            cluster=cast(eks.ICluster, cluster),  # jsii's Cluster satisfies ICluster; mypy cannot tell
            chart=CHART,
            repository=CHART_REPOSITORY,
            version=CHART_VERSION,
            release=CHART,
            namespace=NAMESPACE,
            wait=True,
            timeout=Duration.minutes(10),
            values={
                "cloudProvider": "aws",
                "awsRegion": Aws.REGION,
                "autoDiscovery": {"clusterName": cluster_name},
                "fullnameOverride": CHART,
                "image": {"tag": IMAGE_TAGS[kubernetes_version]},
                "rbac": {"serviceAccount": {"create": True, "name": SERVICE_ACCOUNT}},
                "extraArgs": {"balance-similar-node-groups": True, "expander": "least-waste"},
                "resources": {"requests": {"cpu": "100m", "memory": "300Mi"}, "limits": {"memory": "600Mi"}},
            },
        )
        # Credentials come from the association; the chart's pods start once it exists and nodes can run them.
        self.chart.node.add_dependency(self.pod_identity, nodegroup)
