"""A production-like deployment from context strings (as `cdk deploy -c key=value` passes them)."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match, Template
from cdk_fixtures import ADMIN_ROLE, InProcessSynth, app_config, joined, only, trainer_environment


def test_stack_name_and_log_level_follow_the_environment(prod: InProcessSynth):
    assert prod.stack.stack_name == "Flywheel-prod"
    _, function = only(prod.resources("AWS::Lambda::Function"), "TrainerFunction")
    assert function["Properties"]["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert function["Properties"]["ReservedConcurrentExecutions"] == 2


def test_alarm_email_subscribes_to_the_topic(prod: InProcessSynth):
    Template.from_json(prod.template).has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


def test_retain_data_false_lets_cdk_destroy_remove_bucket_and_images(prod: InProcessSynth):
    _, bucket = only(prod.resources("AWS::S3::Bucket"), "DataBucket")
    assert bucket["DeletionPolicy"] == "Delete"
    assert prod.resources("Custom::S3AutoDeleteObjects")
    _, repo = only(prod.resources("AWS::ECR::Repository"), "AppImages")
    assert repo["DeletionPolicy"] == "Delete"
    assert repo["Properties"]["EmptyOnDelete"] is True


def test_cluster_version_endpoint_cidrs_admin_access_and_nodes(prod: InProcessSynth):
    template = Template.from_json(prod.template)
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Version": "1.36",
            "ResourcesVpcConfig": Match.object_like(
                {"EndpointPublicAccess": True, "EndpointPrivateAccess": True, "PublicAccessCidrs": ["203.0.113.0/24"]}
            ),
        },
    )
    entries = [e["Properties"] for e in prod.resources("AWS::EKS::AccessEntry").values()]
    admin = [e for e in entries if e["PrincipalArn"] == ADMIN_ROLE]
    assert len(admin) == 1
    (policy,) = admin[0]["AccessPolicies"]
    assert policy["AccessScope"] == {"Type": "cluster"}
    assert joined(policy["PolicyArn"]).endswith(":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")
    template.has_resource_properties("AWS::EKS::Nodegroup", {"InstanceTypes": ["m6i.large", "m5.large"]})


def test_image_tag_reaches_the_pods(prod: InProcessSynth):
    _, app = only(prod.resources("Custom::AWSCDK-EKS-KubernetesResource"), "ServingClustermanifestApp")
    manifest: Any = app["Properties"]["Manifest"]
    assert joined(manifest).count(':3f2c1ab"') >= 2


def test_pods_serve_the_model_and_schema_the_trainer_publishes(prod: InProcessSynth):
    config, trainer = app_config(prod), trainer_environment(prod)
    assert config["FLYWHEEL_MODEL_NAME"] == trainer["FLYWHEEL_MODEL_NAME"] == "churn"  # modelName, not savings
    assert config["FLYWHEEL_SCHEMA"] == trainer["FLYWHEEL_SCHEMA"] == "churn"  # schema, not savings
    assert config["FLYWHEEL_BUCKET"] == trainer["FLYWHEEL_BUCKET"]


def test_a_ui_without_sign_in_writes_nothing_whatever_models_are_listed(prod: InProcessSynth):
    """This variant has no certificate, so no sign-in: a viewer-only UI. With sign-in the UI may upload and move
    every model's alias, and nothing else (tests/cdk/test_cdk_access.py)."""
    role_id, _ = only(prod.resources("AWS::IAM::Role"), "ServingUiPodRole")
    puts = [
        joined(statement["Resource"])
        for policy in prod.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "s3:PutObject" in statement["Action"]
    ]
    bucket = json.dumps({"Fn::GetAtt": [only(prod.resources("AWS::S3::Bucket"), "DataBucket")[0], "Arn"]})
    assert bucket and puts == []


def test_pods_serve_the_listed_models(prod: InProcessSynth):
    assert app_config(prod)["FLYWHEEL_SERVE_MODELS"] == "churn,savings"  # serveModels


def test_trainer_job_size_timeout_and_model_follow_the_context(prod: InProcessSynth):
    _, job = only(prod.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    props = job["Properties"]
    container = props["ContainerProperties"]
    assert {r["Type"]: r["Value"] for r in container["ResourceRequirements"]} == {"VCPU": "8", "MEMORY": "32768"}
    assert props["Timeout"] == {"AttemptDurationSeconds": 600 * 60}
    assert props["Parameters"] == {"model": "churn", "lock": "none"}
    assert props["JobDefinitionName"] == "Flywheel-prod-trainer"
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert (env["FLYWHEEL_MODEL_NAME"], env["FLYWHEEL_SCHEMA"]) == ("churn", "churn")
    assert env["FLYWHEEL_LOCK_TTL_SECONDS"] == str(600 * 60)
    assert env["FLYWHEEL_BUCKET"] == trainer_environment(prod)["FLYWHEEL_BUCKET"]
    _, environment = only(prod.resources("AWS::Batch::ComputeEnvironment"), "TrainerJobComputeEnvironment")
    assert environment["Properties"]["ComputeResources"]["MaxvCpus"] == 32
