"""kube-prometheus-stack (Prometheus, Alertmanager, Grafana) in the cluster, configured from monitoring/."""

from __future__ import annotations

import json
from typing import Any, cast

from aws_cdk import CfnResource, Duration
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from cdk.monitoring_assets import Dashboard

CHART = "kube-prometheus-stack"
CHART_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
RELEASE = "kube-prometheus-stack"
NAMESPACE = "monitoring"
#: The label the chart's Grafana sidecar watches for dashboard ConfigMaps.
DASHBOARD_LABEL = "grafana_dashboard"


class ClusterMonitoring(Construct):
    """The pinned chart with the repo's values and rules, plus one ConfigMap per Grafana dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        chart_version: str,
        values: dict[str, Any],
        dashboards: list[Dashboard],
    ) -> None:
        super().__init__(scope, construct_id)
        target = cast(eks.ICluster, cluster)  # jsii's Cluster satisfies ICluster; mypy cannot tell
        self.chart = eks.HelmChart(
            self,
            "Chart",
            cluster=target,
            chart=CHART,
            repository=CHART_REPOSITORY,
            version=chart_version,
            release=RELEASE,
            namespace=NAMESPACE,
            create_namespace=True,
            wait=True,
            timeout=Duration.minutes(15),
        )
        # Pass the values as one JSON string: jsii drops `null`s inside a `values` mapping, and a values file
        # may use null on purpose to remove a chart default.
        resource = self.chart.node.find_child("Resource").node.default_child
        assert isinstance(resource, CfnResource)
        resource.add_property_override("Values", json.dumps(values, separators=(",", ":")))

        self.dashboards: list[eks.KubernetesManifest] = []
        for dashboard in dashboards:
            config_map = eks.KubernetesManifest(
                self,
                f"Dashboard-{dashboard.name}",
                cluster=target,
                manifest=[
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": f"grafana-dashboard-{dashboard.name}",
                            "namespace": NAMESPACE,
                            "labels": {DASHBOARD_LABEL: "1"},
                        },
                        "data": {f"{dashboard.name}.json": dashboard.json_text},
                    }
                ],
            )
            config_map.node.add_dependency(self.chart)  # the chart creates the namespace
            self.dashboards.append(config_map)
