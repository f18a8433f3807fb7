"""Judge Lambda: an EventBridge schedule (every minute) -> one judge pass over every model -> logs and metrics;
and, each run, how many models' production versions are short of their holdout score on live traffic.

Thin by design: build the settings, call flywheel.jobs.judge_pass.judge_all, report each pass. A model whose pass failed
(action "error") is logged and counted, never raised: the next scheduled run retries it, and one model's
fault must not hide the others' passes. Only a failure before any model is judged (settings, listing the
registrations) raises, so Lambda counts it in its Errors metric. Runs from the trainer's image with another CMD.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from flywheel.feedback.quality_summary import short_in_production
from flywheel.jobs.judge_pass import Pass, judge_all
from flywheel.settings import CoreSettings
from flywheel.storage import s3_client

SERVICE = "flywheel-judge"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Flywheel", service=SERVICE)

#: Metric name -> the pass actions it counts; every one is emitted on every run (0 included), so a quiet
#: minute reads as 0, not as missing data. "settled" is a promotion completed by a later pass.
COUNTED = {
    "RolloutsPromoted": ("promote",),
    "RolloutsAborted": ("abort",),
    "RolloutsWaiting": ("wait",),
    "RolloutsSettled": ("settled",),
    "JudgeConflicts": ("conflict",),
    "JudgeErrors": ("error",),
}


@cache
def _settings() -> CoreSettings:
    return CoreSettings()  # type: ignore[call-arg]  # bucket comes from the environment


@cache
def _s3() -> Any:
    return s3_client()


def _log(p: Pass) -> None:
    fields = p.to_dict()
    if p.action == "error":
        logger.error("judge pass failed; the next scheduled run retries", extra=fields)
    elif p.action in ("promote", "abort", "settled", "conflict"):
        logger.warning(f"rollout {p.action}", extra=fields)  # a decision (or a lost race): worth seeing
    elif p.action == "wait":
        logger.info("rollout waiting for a sufficient sample", extra=fields)
    else:
        logger.debug("no running rollout", extra=fields)


def _emit(passes: list[Pass]) -> None:
    actions = Counter(p.action for p in passes)
    for name, counted in COUNTED.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=sum(actions[a] for a in counted))
    failed = sum(p.mlflow.startswith("failed") for p in passes)  # the mirror's aliases after a decision
    metrics.add_metric(name="MlflowMirrorFailed", unit=MetricUnit.Count, value=failed)


def _emit_quality(settings: CoreSettings, models: list[str]) -> None:
    """LiveQualityBelowHoldout: how many models' production versions are short of their holdout score in their
    published live quality (flywheel/feedback/quality_summary.py), every run, so the cloud's alarm sees a sustained
    shortfall as consecutive periods (cdk/observability.py) however rarely labels arrive."""
    short = 0
    for name in models:
        try:
            short += short_in_production(_s3(), settings.bucket, name, settings.models_prefix)
        except Exception:  # one unreadable document must not hide the others
            logger.exception("live quality unreadable", extra={"model": name})
    metrics.add_metric(name="LiveQualityBelowHoldout", unit=MetricUnit.Count, value=short)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One judge pass over every registered model; the passes, as dicts."""
    settings = _settings()
    # the MLflow mirror after decisions shares what is left of this invocation, less a margin for the metrics
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - 10
    passes = judge_all(_s3(), settings, deadline=deadline)
    for p in passes:
        _log(p)
    _emit(passes)
    _emit_quality(settings, [p.model for p in passes])  # judge_all: one pass per registered model
    return {"passes": [p.to_dict() for p in passes]}
