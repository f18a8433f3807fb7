"""EKS (aws_eks_v2) with a managed node group, the app from k8s/overlays/eks, and Pod Identity for its pods.

Hardened by default (docs/security.md): the API endpoint is private unless `endpoint_cidrs` allow-lists a public
one; nodes require IMDSv2 with a hop limit of 1 (pods cannot reach the node's instance credentials); the VPC
CNI add-on runs its network policy agent so the app's NetworkPolicies are enforced; metrics-server feeds the HPA;
Cluster Autoscaler scales the node group (cdk/node_autoscaler.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aws_cdk import CfnResource, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct, IConstruct

from cdk.manifests import (
    API_SERVICE,
    APP_NAMESPACE,
    APP_SERVICE_ACCOUNT,
    UI_SERVICE,
    UI_SERVICE_ACCOUNT,
    Manifest,
)
from cdk.node_autoscaler import ClusterAutoscaler

#: The root volume of the AL2023 EKS AMI (set in the launch template: a node group with one takes no disk size).
ROOT_DEVICE = "/dev/xvda"
#: VPC CNI add-on configuration: run the network policy agent, so NetworkPolicies are enforced.
VPC_CNI_CONFIGURATION = {"enableNetworkPolicy": "true"}
#: The EKS add-on (a community add-on) that serves the resource metrics API the HorizontalPodAutoscaler reads.
METRICS_SERVER_ADDON = "metrics-server"


class ServingCluster(Construct):
    """VPC + cluster + nodes + kubectl provider; `deploy_app` applies the rendered manifests."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        kubernetes_version: str,
        instance_types: Sequence[str],
        min_size: int,
        desired_size: int,
        max_size: int,
        disk_size_gib: int,
        nat_gateways: int,
        endpoint_cidrs: Sequence[str],
        admin_role_arn: str | None,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        flow_logs = logs.LogGroup(self, "VpcFlowLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=nat_gateways,
            # Pods read models from S3 through the gateway endpoint: no NAT data charges for that traffic.
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"All": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        restricted = len(endpoint_cidrs) > 0
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            version=eks.KubernetesVersion.of(kubernetes_version),
            vpc=self.vpc,
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            # Never open to 0.0.0.0/0: private only, unless a public endpoint is allow-listed with endpoint_cidrs.
            endpoint_access=(
                eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*endpoint_cidrs)
                if restricted
                else eks.EndpointAccess.PRIVATE
            ),
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            # The kubectl handler runs in the VPC's private subnets, so it reaches the private endpoint whether
            # the public one is off or restricted to `endpoint_cidrs`.
            kubectl_provider_options=eks.KubectlProviderOptions(kubectl_layer=KubectlV35Layer(self, "KubectlLayer")),
        )
        # IMDSv2 only, with a hop limit of 1: the token's response cannot leave the node's own network namespace,
        # so pods cannot read the node role's credentials from the instance metadata service.
        self.launch_template = ec2.CfnLaunchTemplate(
            self,
            "NodeLaunchTemplate",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                metadata_options=ec2.CfnLaunchTemplate.MetadataOptionsProperty(
                    http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
                ),
                block_device_mappings=[
                    ec2.CfnLaunchTemplate.BlockDeviceMappingProperty(
                        device_name=ROOT_DEVICE,
                        ebs=ec2.CfnLaunchTemplate.EbsProperty(
                            volume_size=disk_size_gib, volume_type="gp3", encrypted=True, delete_on_termination=True
                        ),
                    )
                ],
            ),
        )
        self.nodegroup = self.cluster.add_nodegroup_capacity(
            "Nodes",
            instance_types=[ec2.InstanceType(t) for t in instance_types],
            min_size=min_size,
            desired_size=desired_size,
            max_size=max_size,
            launch_template_spec=eks.LaunchTemplateSpec(
                id=self.launch_template.ref, version=self.launch_template.attr_latest_version_number
            ),
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            capacity_type=eks.CapacityType.ON_DEMAND,
            enable_node_auto_repair=True,
        )
        target = cast(eks.ICluster, self.cluster)  # jsii's Cluster satisfies ICluster; mypy cannot tell
        # The managed VPC CNI takes over the one EKS installs (OVERWRITE) and runs the network policy agent.
        self.vpc_cni = eks.Addon(
            self, "VpcCni", cluster=target, addon_name="vpc-cni", configuration_values=VPC_CNI_CONFIGURATION
        )
        vpc_cni_resource = self.vpc_cni.node.default_child
        assert isinstance(vpc_cni_resource, CfnResource)
        vpc_cni_resource.add_property_override("ResolveConflicts", "OVERWRITE")
        # metrics-server runs on the nodes: create it once they exist, so the add-on becomes active.
        self.metrics_server = eks.Addon(self, "MetricsServer", cluster=target, addon_name=METRICS_SERVER_ADDON)
        self.metrics_server.node.add_dependency(self.nodegroup)
        # Nodes scale between min_size and max_size with the pods' demand (docs/security.md: why this autoscaler).
        self.autoscaler = ClusterAutoscaler(
            self,
            "NodeAutoscaler",
            cluster=self.cluster,
            nodegroup=self.nodegroup,
            kubernetes_version=kubernetes_version,
        )
        if admin_role_arn:
            self.cluster.grant_access(
                "AdminAccess",
                admin_role_arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

        # The pods get AWS credentials through EKS Pod Identity: one role per ServiceAccount (which the overlay
        # defines; an association does not need it to exist first). The API only reads the registry; the UI
        # also uploads batches and moves the alias, so it gets a role of its own (grants in cdk/grants.py).
        self.app_role, self.pod_identity = self._pod_role(
            "App", APP_SERVICE_ACCOUNT, "Flywheel API pods: read-only access to the model registry"
        )
        self.ui_role, self.ui_pod_identity = self._pod_role(
            "Ui",
            UI_SERVICE_ACCOUNT,
            "Flywheel UI pods: read batches and quarantine reports, upload under data/, move the production alias",
        )

    def _pod_role(
        self, name: str, service_account: str, description: str
    ) -> tuple[iam.Role, eks.CfnPodIdentityAssociation]:
        """A role only EKS Pod Identity can assume, bound to `flywheel/<service_account>`."""
        principal = iam.ServicePrincipal("pods.eks.amazonaws.com")
        role = iam.Role(self, f"{name}PodRole", assumed_by=principal, description=description)
        role.assume_role_policy.add_statements(  # type: ignore[union-attr]
            iam.PolicyStatement(actions=["sts:TagSession"], principals=[principal])
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            f"{name}PodIdentity",
            cluster_name=self.cluster.cluster_name,
            namespace=APP_NAMESPACE,
            service_account=service_account,
            role_arn=role.role_arn,
        )
        agent = self.cluster.eks_pod_identity_agent
        if agent is not None:
            association.node.add_dependency(agent)
        return role, association

    def deploy_app(self, manifests: list[Manifest]) -> eks.KubernetesManifest:
        """Apply the rendered overlay as one manifest (kubectl applies it in order: namespace first)."""
        app = self.cluster.add_manifest("App", *manifests)
        # Pods start with credentials only once the agent runs and their association exists.
        app.node.add_dependency(self.pod_identity, self.ui_pod_identity)
        return app

    def load_balancer_host(self, construct_id: str, *, service: str, after: IConstruct) -> str:
        """The DNS name AWS gives a LoadBalancer Service, read once `after` has applied it (a token until deploy)."""
        value = eks.KubernetesObjectValue(
            self,
            construct_id,
            cluster=cast(eks.ICluster, self.cluster),  # jsii's Cluster satisfies ICluster; mypy cannot tell
            object_type="service",
            object_name=service,
            object_namespace=APP_NAMESPACE,
            json_path=".status.loadBalancer.ingress[0].hostname",
            timeout=Duration.minutes(10),
        )
        value.node.add_dependency(after)
        return value.value


__all__ = ["API_SERVICE", "UI_SERVICE", "ServingCluster"]
