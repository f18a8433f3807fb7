"""A model's published live quality (flywheel/feedback/quality_summary.py) as CloudWatch metrics (Powertools EMF).

Per version, with dimensions `model` and `version` (besides Powertools' `service`): LiveQuality (only when the
version has labelled predictions), LiveQualityShortfall (only when both figures are known) and
LabelledPredictions, each time a feedback file republishes the document. The alarm's count
(LiveQualityBelowHoldout) is the scheduled judge's (lambdas/judge/handler.py): it covers every model each
minute, so one model's figures never clear another's alarm. Names and units: docs/metrics.md.

Each figure is its own EMF document (`single_metric`): the handler's `Metrics` object flushes one dimension set
for everything it holds, which cannot carry a different `model` per figure.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "Flywheel"  # as lambdas/trainer/handler.py `metrics`


def emit(doc: dict[str, Any]) -> None:
    """Print the EMF documents of one published live-quality document (CloudWatch reads them from the log)."""
    model = str(doc["model"])
    for v in doc["versions"]:
        dims = {"model": model, "version": str(v["version"])}
        if v["live"] is not None:
            _put("LiveQuality", MetricUnit.NoUnit, float(v["live"]), dims)
        if v["shortfall"] is not None:
            _put("LiveQualityShortfall", MetricUnit.NoUnit, float(v["shortfall"]), dims)
        _put("LabelledPredictions", MetricUnit.Count, float(v["labelled"]), dims)


def _put(name: str, unit: MetricUnit, value: float, dimensions: dict[str, str]) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        for key, val in dimensions.items():
            metric.add_dimension(name=key, value=val)
