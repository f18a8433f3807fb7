"""The trainer Lambda: a container image built from lambdas/trainer/Dockerfile, fed by the upload queue.

The same image also runs as the AWS Batch job the Lambda hands big retrains to (cdk/trainer_job.py):
`trainer_image` builds it once, and both use that one asset.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Size
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

TIMEOUT = Duration.minutes(15)
SERVICE_NAME = "flywheel-trainer"
METRICS_NAMESPACE = "Flywheel"
DOCKERFILE = "lambdas/trainer/Dockerfile"

#: Kept out of the image build context: they are large, local, or not part of the trainer.
ASSET_EXCLUDES = [
    ".git",
    ".venv",
    ".tools",
    "**/node_modules",
    "cdk.out",
    "**/__pycache__",
    "**/*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".flywheel",
    "test-artifacts",
    "tests",
    "bench",
    "cdk",
    "k8s",
    "monitoring",
    ".github",
    ".ci",
    "*.egg-info",
    "build",
    "dist",
    # The repository's .dockerignore (read too) leaves Dockerfiles out of the context; the staged copy that
    # `cdk deploy` builds from must still contain this one.
    f"!{DOCKERFILE}",
]


def lambda_logs_and_role(
    scope: Construct, description: str, retention: logs.RetentionDays
) -> tuple[logs.LogGroup, iam.Role]:
    """A Lambda's own log group and role ("Logs", "Role" in `scope`), instead of AWSLambdaBasicExecutionRole:
    logs go to this group only (no CreateLogGroup on "*"); S3 access is granted in the Stack."""
    log_group = logs.LogGroup(scope, "Logs", retention=retention, removal_policy=RemovalPolicy.DESTROY)
    role = iam.Role(scope, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description)
    log_group.grant_write(role)
    return log_group, role


def trainer_image(scope: Construct, construct_id: str, *, repo_root: Path) -> ecr_assets.DockerImageAsset:
    """The trainer image, built and pushed by `cdk deploy` (cdk-assets); `cdk synth` only stages the context."""
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(repo_root),
        file=DOCKERFILE,
        platform=ecr_assets.Platform.LINUX_AMD64,
        exclude=ASSET_EXCLUDES,
        ignore_mode=IgnoreMode.DOCKER,  # read .dockerignore with Docker's rules, not as globs
    )


class Trainer(Construct):
    """Docker-image Lambda with a 15-minute timeout, debounced SQS batches and partial-batch failures."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        image: ecr_assets.DockerImageAsset,
        queue: sqs.IQueue,
        environment: dict[str, str],
        memory_mib: int,
        ephemeral_storage_mib: int,
        batch_size: int,
        batch_window: Duration,
        max_concurrency: int,
        reserved_concurrency: int | None,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group, self.role = lambda_logs_and_role(self, "Flywheel trainer Lambda", log_retention)
        # The image's ENTRYPOINT + CMD run the runtime interface client with the handler; no override here.
        code = lambda_.DockerImageCode.from_ecr(image.repository, tag_or_digest=image.image_tag)
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=code,
            description="Flywheel trainer: validate a batch, retrain, gate, publish a model version",
            architecture=lambda_.Architecture.X86_64,
            timeout=TIMEOUT,
            memory_size=memory_mib,
            ephemeral_storage_size=Size.mebibytes(ephemeral_storage_mib),
            environment=environment,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            reserved_concurrent_executions=reserved_concurrency,
        )
        self.event_source = event_sources.SqsEventSource(
            queue,
            batch_size=batch_size,
            max_batching_window=batch_window,
            report_batch_item_failures=True,
            max_concurrency=max_concurrency,
        )
        self.function.add_event_source(self.event_source)
