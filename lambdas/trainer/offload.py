"""Where a retrain goes when it will not fit the Lambda, and the delayed retry when the lock is busy.

`batch`: AWS Batch on Fargate runs the same image with `python -m flywheel.cli retrain --model <name>`
(cdk/trainer_job.py). `process`: `flywheel up` runs the same command as a local child process. Both run
the same core function as the Lambda; the core does not know where it runs.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import boto3

from flywheel.child_processes import die_with_parent
from flywheel.errors import FlywheelError
from flywheel.settings import TrainerSettings
from lambdas.trainer.delayed import MAX_DELAY, send_later
from lambdas.trainer.events import RETRAIN_EVENT

log = logging.getLogger(__name__)
MIN_DELAY = 30
_TAG_UNSAFE = re.compile(r"[^\w\s+\-=.:/@]")  # characters AWS tags (and ECS, which Batch propagates to) refuse


def submit(settings: TrainerSettings, *, model: str, reason: str, lock_token: str) -> str:
    """Start model `model`'s retrain elsewhere, adopting the lock claimed for it; returns what was started."""
    name = model
    if settings.offload == "batch":
        if not (settings.offload_job_queue and settings.offload_job_definition):
            raise FlywheelError("FLYWHEEL_OFFLOAD=batch needs FLYWHEEL_OFFLOAD_JOB_QUEUE and _JOB_DEFINITION")
        job = boto3.client("batch").submit_job(
            jobName=f"flywheel-retrain-{name}-{int(time.time())}",
            jobQueue=settings.offload_job_queue,
            jobDefinition=settings.offload_job_definition,
            parameters={"model": name, "lock": lock_token},
            tags={"flywheel:model": name, "flywheel:reason": _TAG_UNSAFE.sub(" ", reason)[:250]},
        )
        return f"batch job {job['jobId']}"
    if settings.offload == "process":
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "retrain", "--model", name, "--adopt-lock", lock_token],
            env={
                **os.environ,
                "FLYWHEEL_RUNS_ON": "local-job",
                "FLYWHEEL_LOCK_TTL_SECONDS": str(settings.offload_lock_seconds),
            },
            start_new_session=True,
            preexec_fn=die_with_parent(),  # only prctl: it never outlives the local worker that started it
        )
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it ends
        return f"local process {proc.pid}"
    raise FlywheelError(f"no offload target (FLYWHEEL_OFFLOAD={settings.offload})")


def retry_later(
    settings: TrainerSettings, *, model: str, keys: list[str], expires_at: float | None, reason: str
) -> bool:
    """Send the queue one delayed "retrain" message instead of failing the deliveries: a busy lock is not
    a failure, and failed receives would count towards the dead-letter limit. False when it cannot."""
    delay = int(min(MAX_DELAY, max(MIN_DELAY, (expires_at or 0) - time.time() + 5)))
    body: dict[str, Any] = {"Event": RETRAIN_EVENT, "model": model, "reason": reason, "keys": keys[:50]}
    # False (the deliveries are retried instead) when there is no queue or the send fails
    return send_later(settings.queue_url, body, delay, what="retrain")
