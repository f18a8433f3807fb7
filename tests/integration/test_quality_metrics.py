"""Live quality as Prometheus gauges on a real replica: predictions captured with their ids, labels for them
under feedback/, the document computed and published (flywheel/feedback/quality_summary.py), and the replica's /metrics
following the document as it changes and disappears, while it keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from flywheel.feedback import quality_summary
from flywheel.feedback.captures import read
from flywheel.schema import load_schema
from tests import loopback
from tests.conftest import Stack
from tests.helpers import eventually
from tests.integration.conftest import ROW, Replica, metrics_text, predict, serving_version, train, wait_for

FAST = {"FLYWHEEL_CAPTURE_FLUSH_SECONDS": "0.3"}
NAMES = {"flywheel_live_quality", "flywheel_live_quality_holdout", "flywheel_live_quality_labelled",
         "flywheel_live_quality_computed_timestamp_seconds"}  # fmt: skip
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def live_series(url: str) -> Series:
    """Every live-quality sample the replica exports: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text(url))
        for s in family.samples
        if s.name in NAMES
    }


def captured(stack: Stack) -> int:
    table = read(stack.s3, stack.bucket, "savings")
    return 0 if table is None else table.num_rows


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"model": "savings", **labels}.items())


def expected(doc: dict[str, Any]) -> Series:
    """What the gauges must say for a published document."""
    out: Series = {key("flywheel_live_quality_computed_timestamp_seconds"): doc["computed_at"]}
    for v in doc["versions"]:
        version, metric = str(v["version"]), doc["metric"]
        if v["live"] is not None:
            out[key("flywheel_live_quality", version=version, metric=metric)] = v["live"]
        if v["holdout"] is not None:
            out[key("flywheel_live_quality_holdout", version=version, metric=metric)] = v["holdout"]
        out[key("flywheel_live_quality_labelled", version=version)] = v["labelled"]
    return out


def test_a_replica_exports_the_published_live_quality_and_follows_it(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint, **FAST)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    assert live_series(api.url) == {}  # nothing published yet: no series at all

    # 120 predictions with our ids, captured; labels for them, off by a known amount
    ids = [f"q-{i}" for i in range(120)]
    rows = [{**ROW, "income": 2500.0 + 37.0 * i, "debt": 500.0 * (i % 9)} for i in range(120)]
    got = loopback.post(api.url + "/v1/predict", json={"instances": rows, "ids": ids}, timeout=10).json()
    wait_for(lambda: captured(stack) >= 120, 60, what="captures written")
    labels = "\n".join(f"{pid},{p + (40.0 if i % 2 else -25.0):.4f}" for i, (pid, p) in
                       enumerate(zip(ids, got["predictions"], strict=True)))  # fmt: skip
    stack.put("feedback/savings/labels-1.csv", f"id,monthly_savings\n{labels}\n".encode())

    doc = quality_summary.compute(stack.s3, stack.bucket, "savings", load_schema("savings"))
    (v1,) = doc["versions"]
    assert (v1["version"], v1["labelled"]) == (1, 120) and v1["live"] is not None and v1["holdout"] is not None
    quality_summary.publish(stack.s3, stack.bucket, doc)
    wait_for(lambda: live_series(api.url) == expected(doc), 60, what="the gauges of the published document")

    # the next document drops v1 and lists v2 (no live figure yet): v1's series go, v2's appear
    v2 = {"version": 2, "live": None, "holdout": 0.9, "labelled": 1, "captured": 30, "shortfall": None}
    changed = {**doc, "computed_at": doc["computed_at"] + 3600, "versions": [v2]}
    quality_summary.publish(stack.s3, stack.bucket, changed)
    wait_for(lambda: live_series(api.url) == expected(changed), 60, what="the gauges of the changed document")
    assert not any(dict(labels).get("version") == "1" for _, labels in live_series(api.url))

    # a deleted document removes every series of the model; serving never noticed any of it
    stack.s3.delete_object(Bucket=stack.bucket, Key=quality_summary.summary_key("savings"))
    wait_for(lambda: live_series(api.url) == {}, 60, what="the series removed with the document")
    assert predict(api.url, [ROW]).status_code == 200
    assert loopback.get(api.url + "/readyz", timeout=5).status_code == 200


def test_an_unreadable_document_never_breaks_serving(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica]
) -> None:
    train(stack)
    api = start_replica(stack.bucket, moto_endpoint)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1")
    stack.put(quality_summary.summary_key("savings"), b"{not json")
    # the replica's poll thread reads it in its own time: serving goes on meanwhile, and after it
    assert predict(api.url, [ROW]).status_code == 200
    eventually(api.output, lambda out: "live quality of savings not read" in out, 60,
               what="the replica to log that it could not read the document")  # fmt: skip
    for _ in range(5):
        assert predict(api.url, [ROW]).status_code == 200
    assert live_series(api.url) == {}
    assert loopback.get(api.url + "/readyz", timeout=5).status_code == 200
