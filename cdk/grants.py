"""Least-privilege S3 access, prefix by prefix, for the trainer and the serving pods (wired in the Stack)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from cdk.data_bucket import DATA_PREFIX, MODELS_PREFIX, QUARANTINE_PREFIX


def _list_prefixes(bucket: s3.IBucket, *prefixes: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["s3:ListBucket"],
        resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
    )


def trainer_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """Read and remove uploads, write rejects, read/write/delete the registry (the lock is deleted on release)."""
    return [
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{DATA_PREFIX}*")],
        ),
        iam.PolicyStatement(
            actions=["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*")],
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")],
        ),
        _list_prefixes(bucket, DATA_PREFIX, MODELS_PREFIX),
    ]


def model_reader_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """What a serving pod needs: read and list `models/`, nothing else."""
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")]),
        _list_prefixes(bucket, MODELS_PREFIX),
    ]


def grant(principal: iam.IGrantable, statements: list[iam.PolicyStatement]) -> None:
    """Attach `statements` to the principal's own policy."""
    for statement in statements:
        principal.grant_principal.add_to_principal_policy(statement)
