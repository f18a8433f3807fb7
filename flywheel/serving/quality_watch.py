"""A model's published live quality (models/<model>/live-quality.json, flywheel/feedback/quality_summary.py) as gauges.

Polled by the model's host thread beside the production alias and the rollout file (flywheel/serving/host.py),
with a conditional GET: an unchanged document costs one 304. The gauges carry the versions the document lists
and no other: a version it no longer lists loses its series (bounded cardinality), and so does a version whose
live figure is unknown (no labelled prediction yet; its labelled count stays, at 0).

Failures never touch serving and never invent figures:
- the document is deleted: every series of the model is removed (nothing is published any more);
- S3 unreachable, or a document that does not parse: logged, the last values stay (they are still the last
  published figures; `flywheel_live_quality_computed_timestamp_seconds` tells how old they are), and the read
  is retried at the next poll.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.feedback import quality_summary
from flywheel.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)
READ_ERRORS = (ClientError, BotoCoreError, ValueError, KeyError, TypeError, OSError)


class QualityWatch:
    """The live-quality gauges of one model in this process."""

    def __init__(self, s3: Any, bucket: str, model: str, metrics: ServingMetrics, models_prefix: str = "models/"):
        self.s3, self.bucket, self.model, self.metrics = s3, bucket, model, metrics
        self.models_prefix = models_prefix
        self.etag: str | None = None
        self._quality: set[tuple[str, str]] = set()  # (version, metric) label values set on live / holdout
        self._holdout: set[tuple[str, str]] = set()
        self._labelled: set[str] = set()
        self._computed = False
        self._failing = False  # log the first failure of a run of them at warning, the rest at debug

    def poll(self) -> None:
        """Read the document if it changed and bring the gauges in line with it; never raises on a bad read."""
        try:
            doc, etag, changed = quality_summary.load(self.s3, self.bucket, self.model, self.models_prefix, self.etag)
            if changed:
                self.apply(doc)
                self.etag = etag
        except READ_ERRORS as e:
            log.log(logging.DEBUG if self._failing else logging.WARNING,
                    "live quality of %s not read; keeping the last figures: %s", self.model, e)  # fmt: skip
            self._failing = True
            return
        self._failing = False

    def apply(self, doc: dict[str, Any] | None) -> None:
        """Set the gauges to `doc` (None: no document, no series)."""
        m = self.metrics
        quality: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        labelled: dict[str, float] = {}
        computed = None if doc is None else float(doc["computed_at"])
        if doc is not None:
            metric = str(doc["metric"])
            for v in doc["versions"]:
                version = str(v["version"])
                quality[(version, metric)] = (_number(v["live"]), _number(v["holdout"]))
                labelled[version] = float(v["labelled"])
        # every value is read before any gauge moves: a malformed document leaves the last figures whole
        live_keys = {k for k, (live, _) in quality.items() if live is not None}
        holdout_keys = {k for k, (_, holdout) in quality.items() if holdout is not None}
        for key in self._quality - live_keys:
            m.live_quality.remove(self.model, *key)
        for key in self._holdout - holdout_keys:
            m.live_quality_holdout.remove(self.model, *key)
        for version in self._labelled - labelled.keys():
            m.live_quality_labelled.remove(self.model, version)
        for (version, metric), (live, holdout) in quality.items():
            if live is not None:
                m.live_quality.labels(model=self.model, version=version, metric=metric).set(live)
            if holdout is not None:
                m.live_quality_holdout.labels(model=self.model, version=version, metric=metric).set(holdout)
        for version, n in labelled.items():
            m.live_quality_labelled.labels(model=self.model, version=version).set(n)
        if computed is not None:
            m.live_quality_computed.labels(model=self.model).set(computed)
        elif self._computed:
            m.live_quality_computed.remove(self.model)
        self._quality, self._holdout, self._labelled = live_keys, holdout_keys, set(labelled)
        self._computed = computed is not None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
