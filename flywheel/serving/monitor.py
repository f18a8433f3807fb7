"""Rolling windows of inputs and predictions; PSI against the manifest, computed off the hot path."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from flywheel.serving.inputs import Columns, as_list
from flywheel.serving.metrics import QuickHistogram, ServingMetrics
from flywheel.serving.served import ServedModel
from flywheel.training import drift


class DriftMonitor:
    """One per served model: its own windows, its own `model`-labelled gauges."""

    def __init__(self, metrics: ServingMetrics, model: str, window: int = 2000) -> None:
        self.metrics, self.model, self.window = metrics, model, window
        self._inputs: dict[str, deque[Any]] = {}
        self._preds: deque[Any] = deque(maxlen=window)
        self._version: int | None = None
        self._lock = threading.Lock()
        self._values: QuickHistogram | None = None  # the prediction_value series, once observed

    def record(self, served: ServedModel, columns: Columns, predictions: list[Any]) -> None:
        """Called once per batch (cheap: deque extends); a new version starts new windows."""
        with self._lock:
            if served.version != self._version:
                self._version = served.version
                self._inputs = {name: deque(maxlen=self.window) for name in columns}
                self._preds.clear()
            for name, col in columns.items():
                self._inputs[name].extend(as_list(col))  # Python floats, not a numpy scalar each
            self._preds.extend(predictions)
        m = self.metrics
        if served.classes:  # one change per class predicted, not per prediction
            for label, n in Counter(map(str, predictions)).items():
                m.predicted_class.labels(self.model, label).inc(n)
        else:
            if self._values is None:  # made at the first regression batch: a classifier has no such series
                self._values = QuickHistogram(m.prediction_value.labels(model=self.model))
            self._values.observe_many(predictions)

    def refresh(self, served: ServedModel | None) -> None:
        """Recompute PSI gauges (on each scrape; O(window) per feature)."""
        if served is None:
            return
        with self._lock:
            if served.version != self._version:
                return
            inputs = {k: list(v) for k, v in self._inputs.items()}
            preds = list(self._preds)
        stats = served.manifest.get("feature_stats", {})
        for name, values in inputs.items():
            if name in stats and len(values) >= 50:
                prof = stats[name]
                self.metrics.feature_drift.labels(model=self.model, feature=name).set(
                    drift.psi(prof["proportions"], drift.histogram(prof, values))
                )
        prof = served.manifest.get("prediction_stats")
        if prof and len(preds) >= 50:
            self.metrics.prediction_drift.labels(model=self.model).set(
                drift.psi(prof["proportions"], drift.histogram(prof, preds))
            )
