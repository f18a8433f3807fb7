"""Whether a model's labelled captures become training data: `models/<model>/feedback-policy.json`.

`{"train": bool, "by": actor, "at": ISO time}`, set with `flywheel feedback-policy --model M --train | --no-train`
and read by the trainer when a feedback file arrives (flywheel/jobs/feedback_arrival.py). Off unless set: captured
features may be personal data, so turning live traffic into training data is a decision someone records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import ClientError

from flywheel.clock import now_iso
from flywheel.storage import is_missing

POLICY_FILE = "feedback-policy.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackPolicy:
    """`train`: write each arriving feedback file's labelled captures as a batch; `by`/`at`: who set it, when
    (both None for the default, which nobody set)."""

    train: bool = False
    by: str | None = None
    at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def policy_key(model: str, models_prefix: str = "models/") -> str:
    return f"{models_prefix}{model}/{POLICY_FILE}"


def get_policy(s3: Any, bucket: str, model: str, models_prefix: str = "models/") -> FeedbackPolicy:
    """The model's stored policy; off when there is none. An unreadable document counts as off (and is logged):
    training on live traffic needs a policy that says so plainly."""
    key = policy_key(model, models_prefix)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if is_missing(e):
            return FeedbackPolicy()
        raise
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("train"), bool):
            raise ValueError("'train' is not true or false")
    except ValueError as e:
        log.warning("s3://%s/%s is not a valid feedback policy (%s): treated as off", bucket, key, e)
        return FeedbackPolicy()
    by, at = doc.get("by"), doc.get("at")
    return FeedbackPolicy(doc["train"], str(by) if by is not None else None, str(at) if at is not None else None)


def set_policy(
    s3: Any, bucket: str, model: str, *, train: bool, by: str, models_prefix: str = "models/"
) -> FeedbackPolicy:
    """Store the policy (replacing the previous one), recording who set it and when."""
    new = FeedbackPolicy(train=train, by=by, at=now_iso())
    s3.put_object(Bucket=bucket, Key=policy_key(model, models_prefix), Body=json.dumps(new.to_dict()).encode(),
                  ContentType="application/json")  # fmt: skip
    return new
