"""Properties of the synthesized default stack (context defaults), asserted with aws_cdk.assertions."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_cdk.assertions import Match, Template
from cdk_fixtures import REPO_ROOT, InProcessSynth, app_config, joined, only, trainer_environment

from cdk.monitoring_assets import chart_values, dashboards
from cdk.settings import DeploySettings

DEFAULTS = DeploySettings()


# --- S3 -------------------------------------------------------------------------------------------------


def test_data_bucket_private_encrypted_versioned_logged_and_retained(synth: InProcessSynth, template: Template):
    bucket_id, bucket = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                    "LoggingConfiguration": Match.object_like({"LogFilePrefix": "flywheel/"}),
                }
            ),
        },
    )
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket_id.startswith("DataBucket")


def test_lifecycle_expires_noncurrent_versions_and_quarantine(synth: InProcessSynth):
    _, bucket = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    noncurrent = rules["expire-noncurrent-versions"]
    assert noncurrent["Status"] == "Enabled"
    assert noncurrent["NoncurrentVersionExpiration"] == {"NoncurrentDays": DEFAULTS.noncurrent_version_days}
    assert noncurrent["ExpiredObjectDeleteMarker"] is True
    assert noncurrent["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert "Prefix" not in noncurrent
    quarantine = rules["expire-quarantine"]
    assert quarantine["Prefix"] == "quarantine/"
    assert quarantine["ExpirationInDays"] == DEFAULTS.quarantine_expiration_days


def test_both_buckets_deny_plain_http(synth: InProcessSynth, template: Template):
    for bucket_id in synth.resources("AWS::S3::Bucket"):
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": bucket_id},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_uploads_under_data_notify_the_queue(synth: InProcessSynth, template: Template):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": {"Ref": bucket_id},
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    {
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "data/"}]}},
                        "QueueArn": {"Fn::GetAtt": [queue_id, "Arn"]},
                    }
                ]
            },
        },
    )


# --- SQS -------------------------------------------------------------------------------------------------


def test_queue_encrypted_with_dlq_and_visibility_beyond_a_run(synth: InProcessSynth):
    queues = synth.resources("AWS::SQS::Queue")
    queue_id, queue = only(queues, "UploadsQueue")
    dlq_id, dlq = only(queues, "UploadsDeadLetterQueue")
    props = queue["Properties"]
    assert props["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    # A message must stay invisible for a whole 15-minute run plus the batching window.
    assert props["VisibilityTimeout"] >= 900 + DEFAULTS.trainer_batch_window_seconds
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue_id != dlq_id


def test_queues_deny_plain_http(synth: InProcessSynth, template: Template):
    for queue_id in synth.resources("AWS::SQS::Queue"):
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                    )
                },
            },
        )


# --- trainer Lambda --------------------------------------------------------------------------------------


def test_trainer_is_an_image_function_with_15_minute_timeout(synth: InProcessSynth):
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    props = function["Properties"]
    assert props["PackageType"] == "Image"
    assert "Handler" not in props and "Runtime" not in props  # the image's CMD names the handler
    assert props["Timeout"] == 900
    assert props["MemorySize"] == DEFAULTS.trainer_memory_mib
    assert props["EphemeralStorage"] == {"Size": DEFAULTS.trainer_ephemeral_storage_mib}
    assert props["Architectures"] == ["x86_64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert "ReservedConcurrentExecutions" not in props  # opt-in: new accounts have too little concurrency


def test_trainer_environment(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    assert function["Properties"]["Environment"]["Variables"] == {
        "FLYWHEEL_BUCKET": {"Ref": bucket_id},
        "FLYWHEEL_MODEL_NAME": "savings",
        "FLYWHEEL_SCHEMA": "savings",
        "FLYWHEEL_LOCK_TTL_SECONDS": "1200",
        "POWERTOOLS_SERVICE_NAME": "flywheel-trainer",
        "POWERTOOLS_METRICS_NAMESPACE": "Flywheel",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",  # envName=dev; prod logs at INFO (test_cdk_variant)
    }


def test_pods_get_the_trainers_bucket_model_name_and_schema(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    config, trainer = app_config(synth), trainer_environment(synth)
    shared = ("FLYWHEEL_BUCKET", "FLYWHEEL_MODEL_NAME", "FLYWHEEL_SCHEMA")
    assert {k: config[k] for k in shared} == {k: trainer[k] for k in shared}
    assert config["FLYWHEEL_BUCKET"] == {"Ref": bucket_id}
    assert (config["FLYWHEEL_MODEL_NAME"], config["FLYWHEEL_SCHEMA"]) == (DEFAULTS.model_name, DEFAULTS.schema)
    assert config["AWS_REGION"] == {"Ref": "AWS::Region"}
    assert not any("PLACEHOLDER" in json.dumps(v) for v in config.values())


def test_event_source_debounces_and_reports_partial_failures(synth: InProcessSynth, template: Template):
    queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    function_id, _ = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [queue_id, "Arn"]},
            "FunctionName": {"Ref": function_id},
            "BatchSize": DEFAULTS.trainer_batch_size,
            "MaximumBatchingWindowInSeconds": DEFAULTS.trainer_batch_window_seconds,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": DEFAULTS.trainer_max_concurrency},
        },
    )


def test_trainer_image_is_a_deploy_time_asset_of_the_trainer_dockerfile(synth: InProcessSynth):
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    images = list(assets["dockerImages"].values())
    assert len(images) == 1
    source = images[0]["source"]
    assert source["dockerFile"] == "lambdas/trainer/Dockerfile"
    assert source["platform"] == "linux/amd64"
    # `cdk deploy` builds from this staged copy of the repository: it must hold the Dockerfile and everything
    # the Dockerfile copies, and none of the heavy local directories.
    context = synth.outdir / source["directory"]
    dockerfile = context / source["dockerFile"]
    assert dockerfile.is_file()
    for copied in copy_sources(dockerfile.read_text()):
        assert list(context.glob(copied)), f"the Dockerfile copies {copied}, missing from the staged context"
    for heavy in (".venv", ".git", ".tools", "cdk.out", "tests", "node_modules", "cdk", "k8s"):
        assert not (context / heavy).exists(), f"{heavy} leaked into the image build context"


def copy_sources(dockerfile: str) -> list[str]:
    """Sources of the Dockerfile's COPY instructions that read the build context (not another stage)."""
    sources = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources += [a.rstrip("/") for a in args[:-1]]
    return sources


def _policy_statements(synth: InProcessSynth, role_prefix: str) -> list[dict[str, Any]]:
    role_id, _ = only(synth.resources("AWS::IAM::Role"), role_prefix)
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _resource_text(resource: Any) -> str:
    return joined(resource).replace(json.dumps({"Fn::GetAtt": ["DataBucketE6B0FAA8", "Arn"]}), "BUCKET")


def _s3_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(action, resource, s3:prefix condition) for every S3 permission, with the bucket ARN written BUCKET."""
    out = set()
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        for action in actions:
            if action.startswith("s3:"):
                assert s["Effect"] == "Allow"
                prefixes = s.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])
                out.add((action, _resource_text(s["Resource"]), ",".join(prefixes)))
    return out


def test_trainer_iam_is_scoped_to_prefixes(synth: InProcessSynth):
    statements = _policy_statements(synth, "TrainerRole")
    assert _s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/data/*", ""),
        ("s3:GetObjectVersion", "BUCKET/data/*", ""),
        ("s3:GetObjectTagging", "BUCKET/data/*", ""),
        ("s3:DeleteObject", "BUCKET/data/*", ""),
        ("s3:PutObject", "BUCKET/quarantine/*", ""),
        ("s3:PutObjectTagging", "BUCKET/quarantine/*", ""),
        ("s3:AbortMultipartUpload", "BUCKET/quarantine/*", ""),
        ("s3:GetObject", "BUCKET/models/*", ""),
        ("s3:PutObject", "BUCKET/models/*", ""),
        ("s3:DeleteObject", "BUCKET/models/*", ""),
        ("s3:AbortMultipartUpload", "BUCKET/models/*", ""),
        ("s3:ListBucket", "BUCKET", "data/*,models/*"),
    }
    # The only Resource "*" is X-Ray's, which has no resource-level permissions (acknowledged in cdk/nag.py).
    star = [s for s in statements if s["Resource"] == "*"]
    assert star == [
        {"Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Effect": "Allow", "Resource": "*"}
    ]


def test_trainer_role_has_no_managed_policies_and_writes_only_its_log_group(synth: InProcessSynth):
    _, role = only(synth.resources("AWS::IAM::Role"), "TrainerRole")
    assert "ManagedPolicyArns" not in role["Properties"]
    log_group_id, _ = only(synth.resources("AWS::Logs::LogGroup"), "TrainerLogs")
    logs = [s for s in _policy_statements(synth, "TrainerRole") if str(s["Action"]).count("logs:")]
    assert logs == [
        {
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
        }
    ]


def test_api_pods_only_read_models(synth: InProcessSynth):
    statements = _policy_statements(synth, "ServingAppPodRole")
    assert _s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/models/*", ""),
        ("s3:ListBucket", "BUCKET", "models/*"),
    }
    assert all(not str(s["Action"]).startswith("sqs") for s in statements)
    assert not [s for s in statements if "Put" in str(s["Action"]) or "Delete" in str(s["Action"])]


def test_ui_pods_read_data_quarantine_reports_and_models_and_write_only_uploads_and_the_alias(
    synth: InProcessSynth,
):
    statements = _policy_statements(synth, "ServingUiPodRole")
    alias = f"BUCKET/models/{DEFAULTS.model_name}/aliases/production.json"
    assert _s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/data/*", ""),  # list the batches, and HeadObject before an upload
        ("s3:PutObject", "BUCKET/data/*", ""),  # upload
        ("s3:GetObject", "BUCKET/quarantine/*.error.json", ""),  # the reports, not the rejected batches
        ("s3:GetObject", "BUCKET/models/*", ""),  # registry: alias, manifests
        ("s3:PutObject", alias, ""),  # promote / roll back: this one key, nothing else under models/
        ("s3:ListBucket", "BUCKET", "data/*,quarantine/*,models/*"),
    }
    # Nothing but these S3 statements: no other service, no Resource "*", no Deny to hide an Allow.
    assert all(
        a.startswith("s3:")
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" and "NotResource" not in s for s in statements)


def test_ui_grants_follow_the_model_name_and_the_core_layout():
    """The alias and report keys the CDK app grants are the ones the core writes and reads."""
    from cdk.grants import ERROR_REPORT_SUFFIX, alias_key
    from flywheel.batches import ERROR_SUFFIX
    from flywheel.registry import Registry

    assert ERROR_REPORT_SUFFIX == ERROR_SUFFIX
    for name in (DEFAULTS.model_name, "churn-2"):
        assert alias_key(name) == Registry(None, "bucket", name).alias_key


# --- ECR -------------------------------------------------------------------------------------------------


def test_app_repository_scans_immutable_tags_lifecycle(synth: InProcessSynth, template: Template):
    template.has_resource(
        "AWS::ECR::Repository",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "ImageTagMutability": "IMMUTABLE",
                }
            ),
        },
    )
    _, repo = only(synth.resources("AWS::ECR::Repository"), "AppImages")
    rules = json.loads(repo["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert [(r["selection"]["tagStatus"], r["selection"]["countType"]) for r in rules] == [
        ("untagged", "sinceImagePushed"),
        ("any", "imageCountMoreThan"),
    ]


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
            "DiskSize": DEFAULTS.node_disk_size_gib,
        },
    )
    template.resource_count_is("AWS::EKS::Nodegroup", 1)


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
    assert bound == {
        "flywheel-app": {"Fn::GetAtt": [api_role_id, "Arn"]},
        "flywheel-ui": {"Fn::GetAtt": [ui_role_id, "Arn"]},
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


# --- CloudWatch ------------------------------------------------------------------------------------------


def test_alarms_on_errors_dlq_depth_and_near_timeout_go_to_the_topic(synth: InProcessSynth):
    topic_id, topic = only(synth.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    assert "KmsMasterKeyId" in topic["Properties"]
    alarms = {
        k.removeprefix("Observability"): v["Properties"] for k, v in synth.resources("AWS::CloudWatch::Alarm").items()
    }
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()}
    errors = by_metric[("AWS/Lambda", "Errors")]
    assert (errors["Statistic"], errors["Threshold"]) == ("Sum", 1)
    dlq = by_metric[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    dlq_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsDeadLetterQueue")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    duration = by_metric[("AWS/Lambda", "Duration")]
    assert (duration["Statistic"], duration["Threshold"]) == ("Maximum", 0.8 * 900 * 1000)
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
    assert len(alarms) == 3
    assert not synth.resources("AWS::SNS::Subscription")  # no alarmEmail by default


def test_dashboard_shows_lambda_queue_and_powertools_metrics(synth: InProcessSynth):
    _, dashboard = only(synth.resources("AWS::CloudWatch::Dashboard"), "ObservabilityDashboard")
    body = joined(dashboard["Properties"]["DashboardBody"])
    for metric in ("Invocations", "Errors", "Duration", "Throttles", "ApproximateNumberOfMessagesVisible"):
        assert f'"{metric}"' in body, metric
    for metric in (
        "BatchRows",
        "QuarantinedBatches",
        "TrainingDuration",
        "Promoted",
        "Rejected",
        "HoldoutScore",
        "ProductionHoldoutScore",
    ):
        assert f'"Flywheel","{metric}","service","flywheel-trainer"' in body, metric
    assert dashboard["Properties"]["DashboardName"] == "Flywheel-dev-trainer"


def test_outputs_say_where_everything_is(synth: InProcessSynth):
    outputs = synth.template["Outputs"]
    assert set(outputs) >= {
        "BucketName",
        "UploadQueueUrl",
        "DeadLetterQueueUrl",
        "ClusterName",
        "KubeconfigCommand",
        "ApiUrl",
        "UiUrl",
        "GrafanaCommand",
        "DashboardUrl",
        "AppRepositoryUri",
        "AlarmTopicArn",
    }
    assert joined(outputs["ApiUrl"]["Value"]).endswith(":8080")
    assert "#dashboards/dashboard/Flywheel-dev-trainer" in joined(outputs["DashboardUrl"]["Value"])
    assert outputs["GrafanaCommand"]["Value"].startswith("kubectl -n monitoring port-forward svc/")
