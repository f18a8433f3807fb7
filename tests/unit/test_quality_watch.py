"""The live-quality gauges of a replica (flywheel/serving/quality_watch.py) on a private registry: only the
versions the document lists, removed with it, the last figures kept when a read fails."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from prometheus_client import CollectorRegistry

from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.quality_watch import QualityWatch

NAMES = ("flywheel_live_quality", "flywheel_live_quality_holdout", "flywheel_live_quality_labelled",
         "flywheel_live_quality_computed_timestamp_seconds")  # fmt: skip


def doc(*versions: tuple[int, float | None, float | None, int], at: float = 100.0) -> dict[str, Any]:
    return {"model": "savings", "task": "regression", "metric": "r2", "window_days": 7, "min_labelled": 100,
            "tolerance": 0.05, "computed_at": at, "versions": [
                {"version": v, "live": live, "holdout": holdout, "labelled": n, "captured": n,
                 "shortfall": None if live is None or holdout is None else holdout - live}
                for v, live, holdout, n in versions]}  # fmt: skip


def series(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name in NAMES
    }


class FakeS3:
    """get_object answers with the next scripted outcome: a document, 'missing', '304' or an exception."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        import json
        from io import BytesIO

        from botocore.exceptions import ClientError

        self.calls.append(kwargs)
        out = self.outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        if out in ("missing", "304"):
            code = "NoSuchKey" if out == "missing" else "304"
            raise ClientError({"Error": {"Code": code, "Message": out}}, "GetObject")
        body, etag = out
        return {"Body": BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode()), "ETag": etag}


@pytest.fixture
def watch() -> tuple[QualityWatch, FakeS3, CollectorRegistry]:
    registry = CollectorRegistry()
    s3 = FakeS3()
    return QualityWatch(s3, "bucket", "savings", ServingMetrics(registry)), s3, registry


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"model": "savings", **labels}.items()))


def test_the_gauges_follow_the_document_and_drop_unlisted_versions(watch: Any) -> None:
    w, s3, registry = watch
    s3.outcomes = [(doc((3, 0.7, 0.8, 250), (2, None, 0.75, 0)), '"a"'), "304",
                   (doc((3, 0.72, 0.8, 400), at=200.0), '"b"')]  # fmt: skip
    w.poll()
    assert series(registry) == {
        key("flywheel_live_quality", version="3", metric="r2"): 0.7,
        key("flywheel_live_quality_holdout", version="3", metric="r2"): 0.8,
        key("flywheel_live_quality_holdout", version="2", metric="r2"): 0.75,
        key("flywheel_live_quality_labelled", version="3"): 250,
        key("flywheel_live_quality_labelled", version="2"): 0,  # no live figure yet: no live series
        key("flywheel_live_quality_computed_timestamp_seconds"): 100.0,
    }
    w.poll()  # unchanged: a 304, asked with the etag
    assert s3.calls[1]["IfNoneMatch"] == '"a"' and len(series(registry)) == 6
    w.poll()
    assert series(registry) == {
        key("flywheel_live_quality", version="3", metric="r2"): 0.72,
        key("flywheel_live_quality_holdout", version="3", metric="r2"): 0.8,
        key("flywheel_live_quality_labelled", version="3"): 400,
        key("flywheel_live_quality_computed_timestamp_seconds"): 200.0,
    }


def test_a_failed_read_keeps_the_last_figures_and_a_deleted_document_removes_them(watch: Any) -> None:
    w, s3, registry = watch
    s3.outcomes = [(doc((3, 0.7, 0.8, 250)), '"a"'), EndpointConnectionError(endpoint_url="http://s3"),
                   (b"{not json", '"b"'), ({"model": "savings"}, '"c"'), "missing"]  # fmt: skip
    w.poll()
    before = series(registry)
    for _ in range(3):  # S3 down, bad JSON, a document without its fields: logged, nothing raised, nothing moved
        w.poll()
        assert series(registry) == before
        assert w.etag == '"a"'  # retried from the last good read
    w.poll()
    assert series(registry) == {}
    assert w.etag is None


def test_nothing_published_means_no_series(watch: Any) -> None:
    w, s3, registry = watch
    s3.outcomes = ["missing"]
    w.poll()
    assert series(registry) == {}
