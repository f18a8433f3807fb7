"""The MLflow mirror on the cloud side (docs/deploy.md, "MLflow mirror"): what the trainer Lambda, its Batch job
and the rollout judge get when it is on, and nothing at all when it is off.

- Their environment: MLflow's tracking URI and the FLYWHEEL_MLFLOW_* settings (`MlflowSettings.environment`).
- One policy on their three roles: read the credentials secret (GetSecretValue on that ARN; the value never
  enters the template or the environment: the mirror reads it when it runs), or, for SageMaker's managed MLflow,
  `sagemaker-mlflow:*` on that one tracking server and read/write under its S3 artifact store.

The roles need no network rule: the Lambdas run outside any VPC and the Batch job's security group already
allows all egress through the NAT gateway (cdk/trainer_job.py), which is where an https server is reached.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct, IConstruct

from cdk.context import SettingsError
from cdk.grants import secret_read_statements
from cdk.mlflow_settings import MlflowSettings
from cdk.nag import Finding

#: MLflow's plugin for SageMaker's managed MLflow: it handles `arn:` tracking URIs and signs for sagemaker-mlflow.
PLUGIN = "sagemaker-mlflow"
TRAINER_LOCK = "lambdas/trainer/requirements.lock"


def plugin_in_image(repo_root: Path) -> bool:
    """Whether the trainer image's hashed lock pins the sagemaker-mlflow plugin."""
    lock = (repo_root / TRAINER_LOCK).read_text()
    return re.search(rf"^{re.escape(PLUGIN)}==", lock, re.MULTILINE) is not None


class MlflowMirror(Construct):
    """Made only when the mirror is on: its environment, and `allow` for the roles that mirror."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: MlflowSettings, repo_root: Path) -> None:
        super().__init__(scope, construct_id)
        if not settings.enabled:
            raise ValueError("MlflowMirror is made only when a tracking server is set")
        if settings.sagemaker and not plugin_in_image(repo_root):
            # without it MLflow refuses the arn: URI and every mirror pass would fail (and alarm)
            raise SettingsError(
                "context 'mlflowTrackingServerArn': the trainer image has no sagemaker-mlflow plugin (MLflow's "
                f"handler of arn: tracking URIs, SigV4 for sagemaker-mlflow); add {PLUGIN} to the trainer's "
                f"requirements and re-lock ({TRAINER_LOCK}, `make lock`), or use mlflowTrackingUri"
            )
        self.settings = settings
        self.environment = settings.environment

    def statements(self) -> list[iam.PolicyStatement]:
        """Exactly what the mirror reaches besides the network: the secret, or the tracking server and its store."""
        s = self.settings
        if s.mlflow_tracking_server_arn is not None:
            partition, bucket, keys = self._store()
            return [
                iam.PolicyStatement(actions=["sagemaker-mlflow:*"], resources=[s.mlflow_tracking_server_arn]),
                # the client writes runs' artifacts and logged models to the store itself (no proxy in SageMaker's)
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[f"arn:{partition}:s3:::{bucket}/{keys}"],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{partition}:s3:::{bucket}"],
                    conditions={"StringLike": {"s3:prefix": [keys]}},
                ),
            ]
        if s.mlflow_credentials_secret_arn is None:
            return []  # a server that asks for no credentials: nothing to grant
        return secret_read_statements([s.mlflow_credentials_secret_arn], s.mlflow_credentials_secret_key_arn)

    def allow(self, roles: list[iam.IRole], *, before: list[IConstruct]) -> iam.Policy | None:
        """Attach `statements` to `roles` as one policy (the `Access` child), in place before `before` (the
        functions and the job definition) are created, so that no first run finds itself refused."""
        statements = self.statements()
        if not statements:
            return None
        policy = iam.Policy(self, "Access", statements=statements, roles=roles)
        for construct in before:
            construct.node.add_dependency(policy)
        for finding in self.findings():
            Validations.of(policy).acknowledge(Acknowledgment(id=finding.rule, reason=finding.reason))
        return policy

    def findings(self) -> list[Finding]:
        """The cdk-nag findings of the SageMaker grants (their resources come from context, so they are computed
        here rather than listed in cdk/nag.py); docs/deploy.md explains them with the others."""
        if self.settings.mlflow_tracking_server_arn is None:
            return []
        partition, bucket, keys = self._store()
        return [
            Finding(
                "MlflowMirror/Access",
                "AwsSolutions-IAM5[Action::sagemaker-mlflow:*]",
                "Every MLflow API of one SageMaker tracking server (the resource is that server's ARN): the mirror "
                "logs runs, registers versions and moves aliases there, as an MLflow client with that server's "
                "credentials would; no other server or SageMaker resource is reachable.",
            ),
            Finding(
                "MlflowMirror/Access",
                f"AwsSolutions-IAM5[Resource::arn:{partition}:s3:::{bucket}/{keys}]",
                "The tracking server's S3 artifact store (mlflowArtifactStoreUri): MLflow clients write runs' "
                "artifacts and logged models there themselves under keys the server names at run time; no delete.",
            ),
        ]

    def _store(self) -> tuple[str, str, str]:
        """(partition of the tracking server, artifact store bucket, key pattern under its prefix)."""
        bucket, prefix = self.settings.artifact_store
        partition = str(self.settings.mlflow_tracking_server_arn).split(":")[1]
        return partition, bucket, f"{prefix}/*" if prefix else "*"
