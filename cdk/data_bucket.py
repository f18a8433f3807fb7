"""The one bucket: `data/` uploads, `quarantine/` rejects, `models/` registry, `captures/` captured predictions,
`feedback/` delayed labels (see DESIGN.md, docs/captures.md)."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import CustomResourceProviderBase, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

DATA_PREFIX = "data/"
QUARANTINE_PREFIX = "quarantine/"
MODELS_PREFIX = "models/"
VALIDATED_PREFIX = "validated/"  # the trainer's typed Parquet copies of accepted batches (docs/architecture.md)
#: Captured predictions, written by the API pods only (flywheel/serving/capture.py); expired after
#: `captureRetentionDays`.
CAPTURES_PREFIX = "captures/"
#: Delayed labels, uploaded by operators (`flywheel feedback`); training data: kept, no expiry.
FEEDBACK_PREFIX = "feedback/"
#: Days an expired or overwritten capture's noncurrent version is kept: captures may hold personal data, so what
#: expiry removes does not linger for `noncurrentVersionDays` (S3 honours the shorter of overlapping expirations).
CAPTURE_NONCURRENT_DAYS = 1
#: Every published model version (model.joblib, manifest.json, its signature): written by the trainer only.
VERSIONS_KEYS = f"{MODELS_PREFIX}*/versions/*"
#: What the bucket policy keeps from everybody but the trainer under VERSIONS_KEYS (a multipart upload is
#: authorized as s3:PutObject too).
VERSION_WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
#: A version's create-only history events (flywheel.registry.history.HISTORY_DIR): decisions about it (a rollout
#: promoted or aborted), added by whoever decides (the rollout judge, an operator signed in to the UI). Never a
#: version's file.
HISTORY_KEYS = f"{VERSIONS_KEYS}/history/*"
#: A version's own files (flywheel.registry.store): the bucket policy keeps them from the history writers by name, as no
#: resource pattern can say "under versions/ but not under history/" (the history writers' IAM allows nothing else).
VERSION_FILES = ("model.joblib", "manifest.json", "manifest.sig")
VERSION_FILE_KEYS = tuple(f"{VERSIONS_KEYS}/{name}" for name in VERSION_FILES)
#: Deletes the history writers may not make anywhere under VERSIONS_KEYS (history is create-only).
VERSION_DELETE_ACTIONS = ["s3:DeleteObject", "s3:DeleteObjectVersion"]
#: The provider aws-cdk-lib adds to empty a bucket with `auto_delete_objects` on `cdk destroy` (retainData=false).
_AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


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
        capture_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.retain = retain
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
                # Captured predictions (possibly personal data) leave after the retention, and their noncurrent
                # copy a day later. `feedback/` has no rule of its own: labels are training data, kept (their
                # noncurrent copies follow the first rule).
                s3.LifecycleRule(
                    id="expire-captures",
                    prefix=CAPTURES_PREFIX,
                    expiration=Duration.days(capture_retention_days),
                    noncurrent_version_expiration=Duration.days(CAPTURE_NONCURRENT_DAYS),
                ),
            ],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )

    def reserve_versions(self, writers: Sequence[iam.IRole], *, history_writers: Sequence[iam.IRole] = ()) -> None:
        """Deny writes and deletes under `models/*/versions/` to every principal but `writers` (the trainer's roles);
        `history_writers` (the rollout judge's role, the UI's when operators sign in) may only add history events.

        An explicit deny in the bucket policy beats any IAM allow, an administrator's included. The only other
        exception is the aws-cdk-lib provider that empties the bucket on `cdk destroy` when the data is not
        retained. S3 lifecycle expiration is not a request by a principal, so it still removes old versions.

        The history writers pass the first statement and are held by two more: no delete under versions/, and no
        write of a version's own files (model.joblib, manifest.json, manifest.sig), so through the bucket policy
        they can publish, replace or remove no version; what they write under versions/ is left to their IAM
        (PutObject on HISTORY_KEYS only). A resource pattern cannot exclude history/ from versions/, hence the
        names; anybody else stays denied everything under versions/, whatever the key.
        """
        arns = [role.role_arn for role in writers]
        if not self.retain:
            provider = Stack.of(self).node.try_find_child(_AUTO_DELETE_PROVIDER)
            if not isinstance(provider, CustomResourceProviderBase):
                raise LookupError(f"auto_delete_objects is on but {_AUTO_DELETE_PROVIDER} is not in the stack")
            arns.append(provider.role_arn)
        history_arns = [role.role_arn for role in history_writers]
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyTheTrainerWritesModelVersions",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=VERSION_WRITE_ACTIONS,
                resources=[self.bucket.arn_for_objects(VERSIONS_KEYS)],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": arns + history_arns}},
            )
        )
        if not history_arns:
            return
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="HistoryWritersDeleteNoVersionKey",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=VERSION_DELETE_ACTIONS,
                resources=[self.bucket.arn_for_objects(VERSIONS_KEYS)],
                conditions={"ArnEquals": {"aws:PrincipalArn": history_arns}},
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="HistoryWritersWriteNoVersionFile",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=VERSION_WRITE_ACTIONS,
                resources=[self.bucket.arn_for_objects(key) for key in VERSION_FILE_KEYS],
                conditions={"ArnEquals": {"aws:PrincipalArn": history_arns}},
            )
        )
