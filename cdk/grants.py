"""Least-privilege access, wired in the Stack: S3 prefix by prefix for the trainer (Lambda and Batch job), the API
pods and the UI pods; and the trainer Lambda's hand-off (submit its Batch job, re-queue an upload message)."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs

from cdk.data_bucket import (
    CAPTURES_PREFIX,
    DATA_PREFIX,
    FEEDBACK_PREFIX,
    MODELS_PREFIX,
    QUARANTINE_PREFIX,
    VALIDATED_PREFIX,
)

#: The one alias the registry moves (flywheel.registry.store.ALIAS), the suffix of a quarantine report
#: (flywheel.data.batch_store.ERROR_SUFFIX) and the trainer's index of validated batches (flywheel.data.catalog.INDEX).
#: The CDK app does not import the core; tests/cdk keeps these equal.
ALIAS = "production"
ERROR_REPORT_SUFFIX = ".error.json"
CATALOG_INDEX = "index.json"


def _read_prefixes(bucket: s3.IBucket, *prefixes: str) -> list[iam.PolicyStatement]:
    """GetObject on every object under each prefix, one statement each."""
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{p}*")]) for p in prefixes
    ]


def _list_prefixes(bucket: s3.IBucket, *prefixes: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["s3:ListBucket"],
        resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
    )


def trainer_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """Read and remove uploads, write rejects, read/write the validated cache (never delete it: a retrain only adds),
    read/write/delete the registry (the lock is deleted on release), and read (only) the captured predictions and
    the delayed labels, for the join of labelled captures into training batches (docs/captures.md): the API pods
    alone write `captures/`, operators `feedback/`."""
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
            actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{VALIDATED_PREFIX}*")],
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")],
        ),
        *_read_prefixes(bucket, CAPTURES_PREFIX, FEEDBACK_PREFIX),
        _list_prefixes(bucket, DATA_PREFIX, MODELS_PREFIX, CAPTURES_PREFIX, FEEDBACK_PREFIX),
    ]


def model_reader_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """What an API pod needs: read and list `models/`, nothing else."""
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")]),
        _list_prefixes(bucket, MODELS_PREFIX),
    ]


#: Where each API process writes its statistics of a running rollout for the judge (flywheel/release/rollout_stats.py)
ROLLOUT_STATS_KEYS = f"{MODELS_PREFIX}*/rollouts/*/stats/*"
#: Where each API process writes its captured predictions (flywheel/serving/capture.py, docs/captures.md)
CAPTURE_KEYS = f"{CAPTURES_PREFIX}*"


def serving_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """An API pod: read and list `models/`, write its rollout statistics there and its captured predictions
    under `captures/` (create-only objects, no read, no delete); nothing else."""
    return [
        *model_reader_statements(bucket),
        *(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(k)])
            for k in (ROLLOUT_STATS_KEYS, CAPTURE_KEYS)
        ),
    ]


def alias_key(model_name: str) -> str:
    """The production alias of `model_name` (flywheel.registry.store.Registry.alias_key; a test keeps them equal)."""
    return f"{MODELS_PREFIX}{model_name}/aliases/{ALIAS}.json"


#: The production alias of every model: one wildcard, for the model folder, and nothing else below it.
ANY_ALIAS_KEY = alias_key("*")


def ui_statements(bucket: s3.IBucket, *, writes: bool) -> list[iam.PolicyStatement]:
    """What a UI pod needs (docs/ui.md): list and read batches under `data/`, list and read the quarantine
    reports, read each model's index of validated batches (`validated/<model>/index.json`: which batch the trainer
    skips as a repeat; not the validated copies), read and list `models/`, `captures/` and `feedback/` (live
    quality, drift); with `writes` (an operator can sign in: FLYWHEEL_UI_AUTH=oidc) also upload new batches under
    `data/` (GetObject answers the HeadObject that keeps an upload from replacing a name) and move the production
    alias of any model (`models/*/aliases/production.json`: models are registered at run time, so their names are
    not known here).
    A viewer-only UI gets no write at all.

    No delete anywhere; no write under `quarantine/`, to model versions or to registrations.
    """
    written = [
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(f"{DATA_PREFIX}*")]),
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(ANY_ALIAS_KEY)]),
    ]
    return [
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{DATA_PREFIX}*")]),
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*{ERROR_REPORT_SUFFIX}")]
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{VALIDATED_PREFIX}*/{CATALOG_INDEX}")]
        ),
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")]),
        # live quality and drift pages (docs/ui.md): captured predictions and their labels, read-only
        *_read_prefixes(bucket, CAPTURES_PREFIX, FEEDBACK_PREFIX),
        _list_prefixes(bucket, DATA_PREFIX, QUARANTINE_PREFIX, MODELS_PREFIX, CAPTURES_PREFIX, FEEDBACK_PREFIX),
        *(written if writes else []),
    ]


def offload_statements(
    *, job_queue_arn: str, job_definition_arns: list[str], upload_queue: sqs.IQueue
) -> list[iam.PolicyStatement]:
    """What the trainer Lambda needs to hand a retrain off: submit that one job definition to that one job queue
    (Batch checks both resources of a SubmitJob), and put a delayed message back on the upload queue when
    another trainer holds the lock. No other Batch action (describe, cancel) and no other queue.
    """
    return [
        iam.PolicyStatement(actions=["batch:SubmitJob"], resources=[job_queue_arn, *job_definition_arns]),
        iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[upload_queue.queue_arn]),
    ]


def grant(principal: iam.IGrantable, statements: list[iam.PolicyStatement]) -> None:
    """Attach `statements` to the principal's own policy."""
    for statement in statements:
        principal.grant_principal.add_to_principal_policy(statement)


def secret_read_statements(secret_arns: list[str], key_arn: str | None) -> list[iam.PolicyStatement]:
    """GetSecretValue on exactly `secret_arns`; kms:Decrypt on `key_arn` through Secrets Manager only, when a
    customer-managed key encrypts them."""
    out = [iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=secret_arns)]
    if key_arn:
        out.append(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{Aws.REGION}.amazonaws.com"}},
            )
        )
    return out
