"""A message the trainer sends its own queue, to be delivered again later (SQS DelaySeconds).

Two senders: a busy lock ("retrain later", lambdas/trainer/offload.py) and a feedback file whose labels wait
for captures still in flight (flywheel/jobs/feedback_arrival.py). Both fall back to something safe when the send
fails, so this reports failure instead of raising.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from flywheel.storage import sqs_client

log = logging.getLogger(__name__)
MAX_DELAY = 900  # SQS allows at most 15 minutes of delay


def send_later(queue_url: str | None, body: dict[str, Any], delay_seconds: float, *, what: str) -> bool:
    """Send `body` (JSON) to `queue_url`, delivered after `delay_seconds` (rounded up, 0..900).
    False, with the error logged, when there is no queue or the send fails."""
    if not queue_url:
        return False
    delay = min(MAX_DELAY, max(0, math.ceil(delay_seconds)))
    try:
        sqs_client().send_message(QueueUrl=queue_url, MessageBody=json.dumps(body), DelaySeconds=delay)
    except Exception:
        log.exception("could not send the delayed %s message", what)
        return False
    return True
