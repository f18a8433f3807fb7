"""The queue between S3 `data/` notifications and the trainer, with a dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_sqs as sqs
from constructs import Construct

#: A message that made the trainer fail this many times goes to the DLQ (and raises an alarm).
MAX_RECEIVE_COUNT = 5


class UploadQueue(Construct):
    """Encrypted (SSE-SQS), TLS-only queue whose visibility timeout outlasts a trainer run."""

    def __init__(
        self, scope: Construct, construct_id: str, *, consumer_timeout: Duration, batch_window: Duration
    ) -> None:
        super().__init__(scope, construct_id)
        # Never redeliver a message while a trainer may still hold it: the whole run (timeout) plus the
        # batching window, doubled for cold start and S3 latency. AWS's 6x advice guards against throttled
        # retries, which the event source's maximum concurrency already prevents.
        visibility = Duration.seconds(2 * (consumer_timeout.to_seconds() + batch_window.to_seconds()))
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=visibility,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
            removal_policy=RemovalPolicy.DESTROY,
        )
