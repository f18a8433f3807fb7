"""Feedback files processed on arrival (docs/captures.md, "Processing on arrival"): `feedback/` ObjectCreated
notifications go to the upload queue beside `data/`'s, and the trainer Lambda, which handles them
(flywheel/jobs/feedback_arrival.py), gets the few S3 permissions that takes beyond a retrain's (cdk/grants.py)."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs

from cdk.data_bucket import DATA_PREFIX, FEEDBACK_PREFIX

#: The batches a feedback file becomes when its model's policy says train
#: (flywheel.feedback.labelled_batches.batch_key).
FEEDBACK_BATCH_KEYS = f"{DATA_PREFIX}*/feedback/*"


def notify_feedback(bucket: s3.Bucket, queue: sqs.IQueue) -> None:
    """Send every object created under `feedback/` to `queue` (the trainer's upload queue)."""
    bucket.add_event_notification(
        s3.EventType.OBJECT_CREATED, s3n.SqsDestination(queue), s3.NotificationKeyFilter(prefix=FEEDBACK_PREFIX)
    )


def feedback_arrival_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """Beyond trainer_statements (which read `feedback/`, `captures/`, write `quarantine/` and `models/`): copy the
    exact version of a bad feedback file to `quarantine/` and take it out of `feedback/` (as a bad batch leaves
    `data/`; with versioning the original stays a noncurrent version), and create the batch
    `data/<model>/feedback/<file>` (create-only in the code: If-None-Match). Only the Lambda handles feedback
    files: the Batch job (a hand-off retrain) does not get these."""
    return [
        iam.PolicyStatement(
            actions=["s3:GetObjectVersion", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{FEEDBACK_PREFIX}*")],
        ),
        # create-only in IAM too: a PutObject without If-None-Match (an overwrite of a batch a manifest's
        # lineage names) is denied (S3's conditional-write condition key; put_new sends the header)
        iam.PolicyStatement(
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(FEEDBACK_BATCH_KEYS)],
            conditions={"Null": {"s3:if-none-match": "false"}},
        ),
    ]
