"""The trainer's hand-off to AWS Batch on Fargate: one image, the job's command, environment, roles and compute,
and exactly what the trainer Lambda may do with it."""

from __future__ import annotations

import json
import re
from typing import Any

from cdk_fixtures import (
    REPO_ROOT,
    InProcessSynth,
    actions,
    joined,
    only,
    role_statements,
    s3_grants,
    trainer_environment,
)

from cdk.settings import DeploySettings

DEFAULTS = DeploySettings()
DOCKERFILE = REPO_ROOT / "lambdas" / "trainer" / "Dockerfile"


def _job_definition(synth: InProcessSynth) -> tuple[str, dict[str, Any]]:
    definition_id, definition = only(synth.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    return definition_id, definition["Properties"]


def _image_uri(value: Any) -> str:
    """An image URI as one `${...}` string, whether CloudFormation spells it as Fn::Sub or as Fn::Join."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return str(value["Fn::Sub"])
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(p if isinstance(p, str) else p.get("Fn::Sub") or "${" + p["Ref"] + "}" for p in parts)
    raise AssertionError(f"not an image URI: {value!r}")


def _dockerfile_json(instruction: str) -> list[str]:
    (line,) = re.findall(rf"(?m)^{instruction}\s+(\[.*\])\s*$", DOCKERFILE.read_text())
    return list(json.loads(line))


# --- one image, two ways to run it ---------------------------------------------------------------------


def test_job_runs_the_same_image_asset_as_the_lambda(synth: InProcessSynth):
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    ((image_hash, image),) = assets["dockerImages"].items()  # one image: built and pushed once
    (destination,) = image["destinations"].values()
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    _, job = _job_definition(synth)
    lambda_uri = _image_uri(function["Properties"]["Code"]["ImageUri"])
    job_uri = _image_uri(job["ContainerProperties"]["Image"])
    assert lambda_uri == job_uri
    assert job_uri.endswith(f"/{destination['repositoryName']}:{image_hash}")
    assert destination["imageTag"] == image_hash
    assert "ImageConfig" not in function["Properties"]  # the Lambda runs the image's ENTRYPOINT + CMD


def test_entrypoint_runs_the_handler_in_lambda_and_the_cli_in_batch(synth: InProcessSynth):
    entrypoint, cmd = _dockerfile_json("ENTRYPOINT"), _dockerfile_json("CMD")
    _, job = _job_definition(synth)
    assert entrypoint == ["/opt/venv/bin/python", "-m"]
    assert entrypoint + cmd == ["/opt/venv/bin/python", "-m", "awslambdaric", "lambdas.trainer.handler.handler"]
    assert job["ContainerProperties"]["Command"] == [
        "flywheel.cli", "retrain", "--model", "Ref::model", "--adopt-lock", "Ref::lock"
    ]  # fmt: skip
    assert job["Parameters"] == {"model": DEFAULTS.model_name, "lock": "none"}


def test_job_command_is_a_real_cli_invocation(synth: InProcessSynth):
    """What Batch runs after substituting the default parameter parses as `flywheel retrain --model <model>`."""
    from flywheel.cli.main import build_parser

    _, job = _job_definition(synth)
    params = {f"Ref::{k}": v for k, v in job["Parameters"].items()}
    module, *argv = [params.get(a, a) for a in job["ContainerProperties"]["Command"]]
    assert module == "flywheel.cli"
    assert (REPO_ROOT / "flywheel" / "cli" / "__main__.py").is_file()  # what `python -m flywheel.cli` runs
    args = build_parser().parse_args(argv)
    assert (args.command, args.model, args.adopt_lock) == ("retrain", DEFAULTS.model_name, "none")


# --- the job's container -------------------------------------------------------------------------------


def test_job_environment_is_the_shared_config_plus_batch_settings(synth: InProcessSynth):
    _, job = _job_definition(synth)
    env = {e["Name"]: e["Value"] for e in job["ContainerProperties"]["Environment"]}
    trainer = trainer_environment(synth)
    keys = ("FLYWHEEL_BUCKET", "FLYWHEEL_MODEL_NAME", "FLYWHEEL_SCHEMA", "FLYWHEEL_SIGNING_KMS_KEY_ID")
    keys += ("FLYWHEEL_ROLLOUT_MODE", "FLYWHEEL_ROLLOUT_SHARE")  # the job releases as the Lambda would
    shared = {k: trainer[k] for k in keys}  # the job signs with the Lambda's key
    timeout = DEFAULTS.trainer_job_timeout_minutes * 60
    assert env == {
        **shared,
        "FLYWHEEL_TRAIN_THREADS": "0",
        "FLYWHEEL_LOCK_TTL_SECONDS": str(timeout),
        "FLYWHEEL_RUNS_ON": "batch",
    }
    assert job["Timeout"] == {"AttemptDurationSeconds": timeout}  # the lock lives as long as an attempt may


def test_job_size_user_platform_and_logs(synth: InProcessSynth):
    _, job = _job_definition(synth)
    container = job["ContainerProperties"]
    assert job["PlatformCapabilities"] == ["FARGATE"]
    assert {r["Type"]: r["Value"] for r in container["ResourceRequirements"]} == {
        "VCPU": str(DEFAULTS.trainer_job_vcpu),
        "MEMORY": str(DEFAULTS.trainer_job_memory_mib),
    }
    assert container["User"] == "10001"  # the image's unprivileged user
    assert container["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    assert container["NetworkConfiguration"] == {"AssignPublicIp": "DISABLED"}
    # Writable on purpose (cdk/trainer_job.py): Batch on Fargate has no tmpfs, so /tmp lives on the root FS.
    assert container["ReadonlyRootFilesystem"] is False
    log_group_id, log_group = only(synth.resources("AWS::Logs::LogGroup"), "TrainerJobLogs")
    assert log_group["Properties"]["RetentionInDays"] == DEFAULTS.log_retention_days
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": log_group_id}


def test_job_retries_once_and_only_when_the_infrastructure_failed(synth: InProcessSynth):
    _, job = _job_definition(synth)
    strategy = job["RetryStrategy"]
    assert strategy["Attempts"] == 2
    *retries, last = strategy["EvaluateOnExit"]
    assert retries == [
        {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
        {"Action": "RETRY", "OnStatusReason": "Task failed to start"},
    ]
    # Batch retries a failure that matches no entry: the catch-all EXIT keeps a failing retrain from running twice.
    assert last == {"Action": "EXIT", "OnReason": "*"}


# --- roles -----------------------------------------------------------------------------------------------


def test_job_role_has_exactly_the_trainers_s3_access_and_nothing_else(synth: InProcessSynth):
    _, job = _job_definition(synth)
    role_id, role = only(synth.resources("AWS::IAM::Role"), "TrainerJobJobRole")
    assert job["ContainerProperties"]["JobRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"
    }
    assert "ManagedPolicyArns" not in role["Properties"]
    statements = role_statements(synth, "TrainerJobJobRole")
    # the Lambda's, less what only the Lambda does: process feedback files (tests/cdk/test_cdk_feedback_arrival.py)
    lambda_only = {("s3:GetObjectVersion", "BUCKET/feedback/*", ""), ("s3:DeleteObject", "BUCKET/feedback/*", ""),
                   ("s3:PutObject", "BUCKET/data/*/feedback/*", "")}  # fmt: skip
    assert s3_grants(statements) == s3_grants(role_statements(synth, "TrainerRole")) - lambda_only
    assert all(a.startswith("s3:") for s in statements for a in actions(s))  # no batch:, sqs:, logs: ...


def test_execution_role_pulls_the_image_and_writes_the_job_log_group_only(synth: InProcessSynth):
    _, job = _job_definition(synth)
    role_id, role = only(synth.resources("AWS::IAM::Role"), "TrainerJobExecutionRole")
    assert job["ContainerProperties"]["ExecutionRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert "ManagedPolicyArns" not in role["Properties"]
    log_group_id, _ = only(synth.resources("AWS::Logs::LogGroup"), "TrainerJobLogs")
    granted = {
        (a, joined(s["Resource"])) for s in role_statements(synth, "TrainerJobExecutionRole") for a in actions(s)
    }
    repository = next(r for a, r in granted if a == "ecr:BatchGetImage")
    assert repository.endswith('"Fn::Sub": "cdk-hnb659fds-container-assets-${AWS::AccountId}-${AWS::Region}"}')
    assert granted == {
        ("logs:CreateLogStream", json.dumps({"Fn::GetAtt": [log_group_id, "Arn"]})),
        ("logs:PutLogEvents", json.dumps({"Fn::GetAtt": [log_group_id, "Arn"]})),
        ("ecr:BatchCheckLayerAvailability", repository),
        ("ecr:GetDownloadUrlForLayer", repository),
        ("ecr:BatchGetImage", repository),
        ("ecr:GetAuthorizationToken", "*"),  # ECR has no resource-level permission for it (cdk/nag.py)
    }


def test_lambda_may_submit_only_this_job_and_requeue_only_to_the_upload_queue(synth: InProcessSynth):
    queue_id, _ = only(synth.resources("AWS::Batch::JobQueue"), "TrainerJobQueue")
    definition_id, job = _job_definition(synth)
    upload_queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    statements = role_statements(synth, "TrainerRole")
    batch = [s for s in statements if any(a.startswith("batch:") for a in actions(s))]
    assert len(batch) == 1 and actions(batch[0]) == ["batch:SubmitJob"] and batch[0]["Effect"] == "Allow"
    resources = [joined(r) for r in batch[0]["Resource"]]
    unrevised = joined(
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":batch:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":job-definition/{job['JobDefinitionName']}",
                ],
            ]
        }
    )
    # The queue, the definition's ARN with its revision (Ref) and without: no wildcard, no other definition.
    assert resources == [
        json.dumps({"Fn::GetAtt": [queue_id, "JobQueueArn"]}),
        json.dumps({"Ref": definition_id}),
        unrevised,
    ]
    assert job["JobDefinitionName"] == f"{synth.stack.stack_name}-trainer"
    sends = [s for s in statements if "sqs:SendMessage" in actions(s)]
    assert sends == [
        {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": {"Fn::GetAtt": [upload_queue_id, "Arn"]}}
    ]
    # Everything the Lambda may do besides S3: its logs, X-Ray, its event source, and the two hand-off grants.
    others = {a for s in statements for a in actions(s) if not a.startswith("s3:")}
    assert others == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "batch:SubmitJob",
        "sqs:SendMessage",
    }


# --- compute ---------------------------------------------------------------------------------------------


def test_compute_environment_is_fargate_in_the_private_subnets_with_egress_only(synth: InProcessSynth):
    _, environment = only(synth.resources("AWS::Batch::ComputeEnvironment"), "TrainerJobComputeEnvironment")
    props = environment["Properties"]
    resources = props["ComputeResources"]
    assert (props["Type"], resources["Type"]) == ("managed", "FARGATE")  # on demand, not FARGATE_SPOT
    assert resources["MaxvCpus"] == DEFAULTS.trainer_job_max_vcpus
    assert "ServiceRole" not in props  # Batch's service-linked role, no managed policy of ours
    private = {
        subnet_id
        for subnet_id, subnet in synth.resources("AWS::EC2::Subnet").items()
        if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Properties"]["Tags"]
        and subnet["Properties"]["VpcId"] == {"Ref": only(synth.resources("AWS::EC2::VPC"), "ServingVpc")[0]}
    }
    assert len(private) == 2
    assert {s["Ref"] for s in resources["Subnets"]} == private
    (group,) = resources["SecurityGroupIds"]
    group_id = group["Fn::GetAtt"][0]
    security_group = synth.resources("AWS::EC2::SecurityGroup")[group_id]["Properties"]
    assert "SecurityGroupIngress" not in security_group
    assert not [
        i for i in synth.resources("AWS::EC2::SecurityGroupIngress").values() if group in i["Properties"].values()
    ]
    assert security_group["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "Allow all outbound traffic by default", "IpProtocol": "-1"}
    ]


def test_job_queue_feeds_the_compute_environment_and_outputs_name_both(synth: InProcessSynth):
    queue_id, queue = only(synth.resources("AWS::Batch::JobQueue"), "TrainerJobQueue")
    environment_id, _ = only(synth.resources("AWS::Batch::ComputeEnvironment"), "TrainerJobComputeEnvironment")
    definition_id, _ = _job_definition(synth)
    assert queue["Properties"]["ComputeEnvironmentOrder"] == [
        {"ComputeEnvironment": {"Fn::GetAtt": [environment_id, "ComputeEnvironmentArn"]}, "Order": 1}
    ]
    assert queue["Properties"]["State"] == "ENABLED"
    outputs = synth.template["Outputs"]
    trainer = trainer_environment(synth)
    assert outputs["TrainerJobQueueArn"]["Value"] == trainer["FLYWHEEL_OFFLOAD_JOB_QUEUE"]
    assert outputs["TrainerJobQueueArn"]["Value"] == {"Fn::GetAtt": [queue_id, "JobQueueArn"]}
    assert outputs["TrainerJobDefinitionArn"]["Value"] == trainer["FLYWHEEL_OFFLOAD_JOB_DEFINITION"]
    assert outputs["TrainerJobDefinitionArn"]["Value"] == {"Ref": definition_id}
