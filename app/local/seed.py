"""`flywheel up`'s bucket: its queue wired as the CDK stack wires it, the default and demo models registered,
and each empty one seeded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.local.banner import DLQ, QUEUE
from flywheel.errors import FlywheelError


def wire_queue(s3: Any, sqs: Any, bucket: str, max_receive_count: int) -> str:
    """The queue + DLQ, and notifications of data/ and feedback/ to it (as the CDK stack wires them); its URL."""
    from flywheel.feedback.labels import FEEDBACK_PREFIX

    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receive_count}"}}'
    attributes = {"VisibilityTimeout": "60", "RedrivePolicy": redrive}
    url: str = sqs.create_queue(QueueName=QUEUE, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # batches under data/ and label files under feedback/ (processed on arrival, docs/captures.md): one queue
    rules = [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}}
        for prefix in ("data/", FEEDBACK_PREFIX)
    ]  # fmt: skip
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": rules})
    return url


def register_and_seed(
    s3: Any, bucket: str, wanted: Mapping[str, str], *, seed: bool, say: Callable[[str], None]
) -> list[str]:
    """Register each model of `wanted` (name -> built-in schema); with `seed`, put a demo batch under its data/.
    Returns the models seeded."""
    from flywheel.data.sample_data import GENERATORS
    from flywheel.registry.registrations import register
    from flywheel.schema import load_schema

    seeded = []
    for name, schema_ref in wanted.items():
        try:
            register(s3, bucket, name, load_schema(schema_ref))
        except FlywheelError as e:  # registered earlier with another schema: that registration stands
            say(f"model {name}: {e.message}")
        gen = GENERATORS.get(schema_ref)
        if seed and gen is not None:
            body = gen(5000, seed=1).to_csv(index=False).encode()
            s3.put_object(Bucket=bucket, Key=f"data/{name}/seed-batch.csv", Body=body)
            say(f"model {name}: seeded data/{name}/seed-batch.csv (5,000 rows from `flywheel sample-data`)")
            seeded.append(name)
    return seeded
