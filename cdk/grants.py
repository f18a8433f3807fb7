"""Least-privilege S3 access, prefix by prefix, for the trainer, the API pods and the UI pods (wired in the Stack)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from cdk.data_bucket import DATA_PREFIX, MODELS_PREFIX, QUARANTINE_PREFIX

#: The one alias the registry moves (flywheel.registry.ALIAS) and the suffix of a quarantine report
#: (flywheel.batches.ERROR_SUFFIX). The CDK app does not import the core; tests/cdk keeps these equal.
ALIAS = "production"
ERROR_REPORT_SUFFIX = ".error.json"


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
    """What an API pod needs: read and list `models/`, nothing else."""
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")]),
        _list_prefixes(bucket, MODELS_PREFIX),
    ]


def alias_key(model_name: str) -> str:
    """The production alias of `model_name` (flywheel.registry.Registry.alias_key; a test keeps them equal)."""
    return f"{MODELS_PREFIX}{model_name}/aliases/{ALIAS}.json"


def ui_statements(bucket: s3.IBucket, model_name: str) -> list[iam.PolicyStatement]:
    """What a UI pod needs (docs/ui.md): list and read batches and upload new ones under `data/` (GetObject
    also answers the HeadObject that keeps an upload from replacing a name), list and read the quarantine
    reports, read and list `models/`, and move exactly one key, the production alias of `model_name`.

    No delete anywhere; no write under `quarantine/` or to model versions.
    """
    return [
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject"], resources=[bucket.arn_for_objects(f"{DATA_PREFIX}*")]
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*{ERROR_REPORT_SUFFIX}")]
        ),
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")]),
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(alias_key(model_name))]),
        _list_prefixes(bucket, DATA_PREFIX, QUARANTINE_PREFIX, MODELS_PREFIX),
    ]


def grant(principal: iam.IGrantable, statements: list[iam.PolicyStatement]) -> None:
    """Attach `statements` to the principal's own policy."""
    for statement in statements:
        principal.grant_principal.add_to_principal_policy(statement)
