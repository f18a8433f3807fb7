"""The one bucket: `data/` uploads, `quarantine/` rejects, `models/` registry (see DESIGN.md)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

DATA_PREFIX = "data/"
QUARANTINE_PREFIX = "quarantine/"
MODELS_PREFIX = "models/"
VALIDATED_PREFIX = "validated/"  # the trainer's typed Parquet copies of accepted batches (docs/architecture.md)


class DataBucket(Construct):
    """Versioned, encrypted, TLS-only bucket with lifecycle rules, plus a bucket for its access logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain: bool,
        noncurrent_version_days: int,
        quarantine_expiration_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # S3 logging writes via the bucket policy
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="flywheel/",
            lifecycle_rules=[
                # Versioning keeps every overwritten alias and every moved-away upload; old copies go after a while.
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
                # Rejected batches are kept for inspection, then leave (their noncurrent copy follows the rule above).
                s3.LifecycleRule(
                    id="expire-quarantine",
                    prefix=QUARANTINE_PREFIX,
                    expiration=Duration.days(quarantine_expiration_days),
                ),
            ],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )
