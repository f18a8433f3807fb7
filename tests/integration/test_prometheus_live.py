"""A real Prometheus (Debian's `prometheus`) scrapes two running API replicas under a little load, with
monitoring/prometheus/rules.yaml loaded. Every Grafana panel query, dashboard variable and alert expression
is then evaluated through Prometheus' HTTP API: it must parse and evaluate, and every metric it selects must
be exported by the API and have series in Prometheus. A dashboard that queries a metric the API does not
export fails here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flywheel.data.sample_data import GENERATORS
from flywheel.feedback import quality_summary
from flywheel.schema import load_schema
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import wait_for
from tests.integration.conftest import METRICS_URLS, metric, metrics_text
from tests.monitoring.promql import (
    BUILTIN_METRICS,
    GRAFANA_VARIABLES,
    ROLLOUT_ONLY_METRICS,
    RULES_FILE,
    Query,
    alert_rules,
    dashboard_queries,
    dashboards,
    is_per_model,
    selectors,
    substitute,
)

# real replicas, a real Prometheus scraping them and evaluating every rule: `make test` starts it first
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
JOB = "flywheel-api"
SCRAPE_INTERVAL_S = 1
MIN_SCRAPES = 5
#: Rows each replica predicts before the scrapes: above the drift monitors' minimum window (50).
DRIFT_ROWS = 100
#: Labels that only Kubernetes service discovery adds; outside a cluster a matcher on them matches "".
KUBERNETES_LABELS = {"namespace", "pod", "service", "endpoint", "container"}
#: Metrics a model of one task never samples (the fixture's model is a regression): allowed to have no
#: series only when the replicas declare them but have no sample of them at all.
TASK_SPECIFIC = {"flywheel_predicted_class_total"}
#: Whole-query results may be empty only when the query filters on something that need not have happened.
MAY_BE_EMPTY = ('status=~"5..', 'status=~"4..')


@dataclass
class Exported:
    """What the replicas' /metrics declare (families, with their sample names) and actually sample."""

    declared: set[str] = field(default_factory=set)
    sampled: set[str] = field(default_factory=set)


def exported_metrics(urls: list[str]) -> Exported:
    out = Exported()
    for url in urls:
        text = metrics_text(url)
        for family in text_string_to_metric_families(text):
            out.declared.add(family.name)
            if family.type == "counter":
                out.declared.add(f"{family.name}_total")
            if family.type == "histogram":
                out.declared.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
            out.sampled.update(s.name for s in family.samples)
    return out


class Prometheus:
    """Client for the HTTP API of the Prometheus under test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> tuple[str | None, list[dict[str, Any]]]:
        """(error, result) of an instant query; error is None when it parsed and evaluated."""
        resp = loopback.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            return f"{body.get('errorType')}: {body.get('error')}", []
        data = body["data"]
        result = data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]
        return None, result

    def value(self, expr: str) -> float:
        error, result = self.query(expr)
        return float(result[0]["value"][1]) if not error and result else 0.0

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's `label_values(match, label)` offers."""
        params = {"match[]": match}
        body = loopback.get(f"{self.url}/api/v1/label/{label}/values", params=params, timeout=10).json()
        return list(body.get("data") or [])

    def rules(self) -> list[dict[str, Any]]:
        body = loopback.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def sample_instances(rows: int, seed: int) -> list[dict[str, Any]]:
    """Valid request rows for the fixture's model (the savings schema), from the demo data generator."""
    schema = load_schema("savings")
    frame = GENERATORS["savings"](rows, seed=seed)[schema.feature_names]
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture
def light_load(api_replicas: list[str]) -> Iterator[None]:
    """Predictions and reads on every replica while Prometheus scrapes (bounded; stops on its own).

    Each replica first gets enough rows to fill the drift monitors' minimum window, so the PSI gauges
    have samples; then a trickle of small predictions and health/model reads keeps the rates non-zero.
    """
    for i, url in enumerate(api_replicas):
        for chunk in range(DRIFT_ROWS // 25):
            body = {"instances": sample_instances(25, seed=100 * i + chunk)}
            resp = loopback.post(f"{url}/v1/predict", json=body, timeout=10)
            assert resp.status_code == 200, resp.text
    trickle = sample_instances(200, seed=7)
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 300  # a bound, not a wait: the fixture stops it sooner
        n = 0
        with httpx.Client(timeout=2) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                for url in api_replicas:
                    # A refused request is load too; the scrape checks catch a dead replica.
                    with contextlib.suppress(httpx.HTTPError):
                        client.post(f"{url}/v1/predict", json={"instances": trickle[n % 190 : n % 190 + 5]})
                        for path in ("/v1/model", "/readyz", "/healthz"):
                            client.get(url + path)
                n += 5
                stop.wait(0.1)

    thread = threading.Thread(target=run, name="light-load", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


@pytest.fixture
def live_quality_published(stack: Stack, api_replicas: list[str]) -> None:
    """A published live-quality.json for the served version, so the live-quality series exist (the replicas
    read it at their next poll; a real one needs captures and labels: tests/integration/test_quality_metrics.py)."""
    version = {"version": 1, "live": 0.8, "holdout": 0.9, "labelled": 150, "captured": 200, "shortfall": 0.1}
    doc = {"model": "savings", "task": "regression", "metric": "r2", "window_days": 7, "min_labelled": 100,
           "tolerance": 0.05, "computed_at": time.time(), "versions": [version]}  # fmt: skip
    quality_summary.publish(stack.s3, stack.bucket, doc)
    wait_for(lambda: all(metric(u, "flywheel_live_quality_labelled", model="savings", version="1") == 150
                         for u in api_replicas), 60, "the replicas to export live quality")  # fmt: skip


@pytest.fixture
def prometheus(
    api_replicas: list[str], light_load: None, live_quality_published: None, tmp_path: Path
) -> Iterator[Prometheus]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed; run `make tools` (Debian package prometheus)")
    port = free_port()
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [METRICS_URLS[u].removeprefix("http://") for u in api_replicas]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text(errors='replace')}"
            try:
                return loopback.get(f"{prom.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "prometheus to be ready", interval=0.25)
        up = f'up{{job="{JOB}"}}'
        wait_for(lambda: prom.value(f"count({up} == 1)") == len(api_replicas), 60, "both targets up", interval=0.25)
        wait_for(lambda: prom.value(f"min(count_over_time({up}[1m]))") >= MIN_SCRAPES, 60, f"{MIN_SCRAPES} scrapes")

        def rules_evaluated() -> bool:
            rules = prom.rules()
            return bool(rules) and all(not r.get("lastEvaluation", "0").startswith("0") for r in rules)

        wait_for(rules_evaluated, 60, "the rules to be evaluated")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def selector_problems(prom: Prometheus, query: Query, exported: Exported) -> list[str]:
    """Each metric the query selects is exported by the API and has series carrying the matched labels."""
    problems = []
    sels = selectors(substitute(query.expr))
    if not sels:
        problems.append(f"{query.where}: selects no metric")
    for sel in sels:
        if sel.metric not in BUILTIN_METRICS and sel.metric not in exported.declared:
            problems.append(f"{query.where}: the API does not export {sel.metric}")
            continue
        error, series = prom.query(f'{{__name__="{sel.metric}", job="{JOB}"}}')
        if error:
            problems.append(f"{query.where}: {sel.metric}: {error}")
            continue
        if not series:
            if sel.metric in TASK_SPECIFIC | ROLLOUT_ONLY_METRICS and sel.metric not in exported.sampled:
                continue
            problems.append(f"{query.where}: Prometheus has no series of {sel.metric}")
            continue
        have = {label for s in series for label in s["metric"]}
        for name, _, _ in sel.matchers:
            if name not in have and name not in KUBERNETES_LABELS:
                problems.append(f"{query.where}: no series of {sel.metric} has a label {name!r}")
    return problems


def test_dashboards_and_alerts_evaluate_against_live_replicas(prometheus: Prometheus, api_replicas: list[str]) -> None:
    exported = exported_metrics(api_replicas)
    problems: list[str] = []

    rules = {r["name"]: r for r in prometheus.rules() if r.get("type") == "alerting"}
    assert set(rules) == {r["alert"] for r in alert_rules()}, "Prometheus did not load every alert"
    for name, rule in rules.items():
        if rule.get("health") != "ok":
            problems.append(f"alert {name}: health {rule.get('health')}: {rule.get('lastError')}")

    for rule in alert_rules():
        query = Query(f"alert {rule['alert']}", rule["expr"])
        error, _ = prometheus.query(rule["expr"])  # a threshold may well leave it empty: that is fine
        if error:
            problems.append(f"{query.where}: {error}")
        problems += selector_problems(prometheus, query, exported)

    queries = [q for name, board in dashboards().items() for q in dashboard_queries(name, board)]
    assert len(queries) >= 20
    for query in queries:
        expr = substitute(query.expr)
        error, result = prometheus.query(expr)
        if error:
            problems.append(f"{query.where}: {error}\n    {expr}")
            continue
        problems += selector_problems(prometheus, query, exported)
        if not result and not may_be_empty(expr, exported):
            problems.append(f"{query.where}: returned no series\n    {expr}")

    # The model variable offers the replicas' model; picked in Grafana's multi-select form (a regex
    # alternation), every per-model query still has series: the filters match the label the API exports.
    (variable,) = [q for q in queries if q.where == "model-lifecycle.json: variable 'model'"]
    models = prometheus.label_values("model", substitute(variable.expr))
    if not models:
        problems.append(f"{variable.where} offers no model: {variable.expr}")
    for model in models[:1]:
        picked = {**GRAFANA_VARIABLES, "model": f"({model}|not-a-model)"}
        for query in queries:
            if not any(is_per_model(s.metric) for s in selectors(substitute(query.expr))):
                continue
            expr = substitute(query.expr, picked)
            error, result = prometheus.query(expr)
            if error or not (result or may_be_empty(expr, exported)):
                problems.append(f"{query.where} for model {model!r}: {error or 'no series'}\n    {expr}")

    assert not problems, "\n".join(problems)


def may_be_empty(expr: str, exported: Exported) -> bool:
    """A query may come back empty when it filters on errors, or counts what a regression never samples."""
    unsampled = TASK_SPECIFIC | ROLLOUT_ONLY_METRICS
    return any(f in expr for f in MAY_BE_EMPTY) or any(m in expr and m not in exported.sampled for m in unsampled)
