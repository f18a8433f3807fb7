"""Alert rules pass promtool (syntax and unit tests), follow the alert conventions, and every alert and
dashboard query names only metrics the API documents (docs/metrics.md) or Prometheus makes itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.promql import (
    BUILTIN_METRICS,
    GRAFANA_VARIABLES,
    HISTOGRAM_SUFFIXES,
    MONITORING,
    REPO,
    ROLLOUT_ONLY_METRICS,
    RULES_FILE,
    RULES_TEST_FILE,
    aggregations,
    alert_rules,
    base_metric,
    dashboard_queries,
    dashboards,
    documented_metrics,
    is_per_model,
    metric_names,
    panels,
    selectors,
    substitute,
    variables,
)

EXPECTED_ALERTS = {
    "FlywheelApiHighErrorRatio",
    "FlywheelApiHighLatency",
    "FlywheelNoReadyReplica",
    "FlywheelModelReloadFailures",
    "FlywheelModelVersionSkew",
    "FlywheelModelStale",
    "FlywheelFeatureDrift",
    "FlywheelPredictionDrift",
    "FlywheelFastPathFallback",
    "FlywheelRolloutAborted",
    "FlywheelShadowDropping",
    "FlywheelLiveQualityBelowHoldout",
}
#: Alerts about a recorded event rather than a condition: nothing to wait out (an abort read from the registry
#: cannot flap), so they fire at once, without `for`, and clear on their own (FlywheelRolloutAborted: an hour on).
EVENT_ALERTS = {"FlywheelRolloutAborted"}
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/flywheel-ml/flywheel/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning", "info"}
CRD_VALIDATOR = REPO / "tests" / "k8s" / "crd" / "validate.mjs"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed; run `make tools` (Debian package prometheus)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULES_TEST_FILE.name, cwd=RULES_TEST_FILE.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_expected_alerts_exist() -> None:
    assert {r["alert"] for r in alert_rules()} == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_follows_the_conventions(rule: dict[str, object]) -> None:
    if rule["alert"] in EVENT_ALERTS:
        assert "for" not in rule, "an alert about a recorded event fires at once"
    else:
        assert rule.get("for"), "every alert about a condition waits (`for`) before it fires"
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict) and isinstance(annotations, dict)
    assert labels.get("severity") in SEVERITIES
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"missing annotation {key}"
    assert annotations["runbook_url"] == RUNBOOK_URL + str(rule["alert"]).lower()
    assert 'job="flywheel-api"' in str(rule["expr"])


def test_every_runbook_url_lands_on_a_runbook_section() -> None:
    headings = re.findall(r"^#{2,3}\s+(.+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    anchors = {github_anchor(h) for h in headings}
    for rule in alert_rules():
        fragment = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert fragment in anchors, f"docs/runbook.md has no section for {rule['alert']}"
    assert "flywheel rollback" in RUNBOOK.read_text(encoding="utf-8")


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing >= EXPECTED_ALERTS, f"no firing case for {EXPECTED_ALERTS - firing}"
    assert silent >= EXPECTED_ALERTS, f"no silent case for {EXPECTED_ALERTS - silent}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_about_a_model_keeps_and_names_the_model(rule: dict[str, Any]) -> None:
    """One fleet serves several models: an alert groups by `model` and says which one it is about."""
    names = metric_names(rule["expr"])
    assert names and all(is_per_model(n) for n in names), f"{rule['alert']} concerns no model: {names}"
    for agg in aggregations(rule["expr"]):
        assert agg.clause == "by" and "model" in agg.labels, f"{rule['alert']}: {agg} drops the model"
    for key in ("summary", "description"):
        assert "$labels.model" in rule["annotations"][key], f"{rule['alert']}: {key} does not name the model"


def _models(series: str) -> set[str]:
    """Non-empty `model` values of a promtool input series (route templates have braces: no selector parse)."""
    return set(re.findall(r'[{,]\s*model="([^"]+)"', series))


def test_every_alert_fires_for_one_model_and_not_for_another() -> None:
    """Each alert has a firing unit test with two models where exactly one is expected to alert."""
    covered = set()
    for case in yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))["tests"]:
        models = set().union(*(_models(s["series"]) for s in case["input_series"]))
        for check in case.get("alert_rule_test", []):
            alerting = {a["exp_labels"].get("model") for a in check.get("exp_alerts") or []}
            if len(models) >= 2 and len(alerting) == 1 and alerting < models:
                covered.add(check["alertname"])
    assert covered >= EXPECTED_ALERTS, f"no two-model firing case for {EXPECTED_ALERTS - covered}"


def test_rules_wrap_into_a_valid_prometheus_rule() -> None:
    """The CDK app ships rules.yaml as a PrometheusRule; the operator's schema must accept it as is."""
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "flywheel", "namespace": "monitoring"},
        "spec": {"groups": groups},
    }
    node = shutil.which("node")
    if node is None or not (CRD_VALIDATOR.parent / "node_modules").is_dir():
        pytest.fail("node or tests/k8s/crd/node_modules is missing; run `make tools`")
    result = subprocess.run(
        [node, str(CRD_VALIDATOR)], input=json.dumps([obj]), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["errors"] == []


def test_alert_expressions_use_documented_metrics() -> None:
    documented = documented_metrics()
    assert len(documented) >= 10, "could not read the metrics table in docs/metrics.md"
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} names no metric"
        unknown = {base_metric(n, documented) for n in names} - set(documented) - BUILTIN_METRICS
        assert not unknown, f"{rule['alert']} uses metrics not in docs/metrics.md: {unknown}"


def test_dashboards_are_well_formed() -> None:
    boards = dashboards()
    assert {"serving-overview.json", "model-lifecycle.json"} <= set(boards)
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids))
    for name, board in boards.items():
        defined = {v["name"] for v in board["templating"]["list"]}
        assert "datasource" in defined, name
        all_panels = list(panels(board))
        assert len(all_panels) >= 6, name
        for panel in all_panels:
            targets = panel.get("targets") or []
            assert targets, f"{name}: panel {panel.get('title')!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}", f"{name}: {panel.get('title')!r}"
            for target in targets:
                assert target.get("expr", "").strip(), f"{name}: {panel.get('title')!r} has an empty query"
        for query in dashboard_queries(name, board):
            unknown = variables(query.expr) - defined - set(GRAFANA_VARIABLES)
            assert not unknown, f"{query.where} uses undefined variables {unknown}"


def test_dashboards_cover_serving_and_the_model_lifecycle() -> None:
    """The panels the issue asks for, found by the metrics they query."""
    names = {
        name: {m for q in dashboard_queries(name, board) for m in metric_names(q.expr)}
        for name, board in dashboards().items()
    }
    assert {
        "flywheel_http_request_duration_seconds_count",
        "flywheel_http_request_duration_seconds_bucket",
        "flywheel_batch_size_bucket",
    } <= names["serving-overview.json"]
    assert {
        "flywheel_model_version",
        "flywheel_model_info",
        "flywheel_model_reloads_total",
        "flywheel_model_staleness_seconds",
        "flywheel_feature_drift_psi",
        "flywheel_prediction_drift_psi",
        "flywheel_prediction_value_bucket",
    } <= names["model-lifecycle.json"]


def test_the_lifecycle_dashboard_has_a_rollouts_row() -> None:
    """Issue 14: candidate vs production per model (errors, p99, shadow agreement and difference, drops), the
    running rollout and its share, and the last decision, as a panel and as annotations."""
    board = dashboards()["model-lifecycle.json"]
    rows = [p for p in board["panels"] if p.get("type") == "row"]
    assert "Rollouts" in [r["title"] for r in rows]
    start = board["panels"].index(next(r for r in rows if r["title"] == "Rollouts"))
    section = []
    for panel in board["panels"][start + 1 :]:
        if panel.get("type") == "row":
            break
        section.append(panel)
    exprs = [t["expr"] for p in section for t in p["targets"]]
    queried = {m for e in exprs for m in metric_names(e)}
    assert {
        "flywheel_rollout_requests_total",
        "flywheel_rollout_errors_total",
        "flywheel_rollout_model_latency_seconds_bucket",
        "flywheel_rollout_shadow_compared_total",
        "flywheel_rollout_shadow_agreed_total",
        "flywheel_rollout_shadow_relative_difference_total",
        "flywheel_rollout_shadow_dropped_total",
        "flywheel_rollout_info",
        "flywheel_rollout_share",
        "flywheel_rollout_decision_timestamp_seconds",
    } <= queried
    flat = {re.sub(r"\s+", " ", e) for e in exprs}
    # candidate and production side by side: every role-labelled query keeps `role`
    for expr in flat:
        if "flywheel_rollout_requests_total" in expr or "flywheel_rollout_errors_total" in expr or "_latency_" in expr:
            assert all("role" in a.labels for a in aggregations(expr)), expr
    assert any(e.startswith("histogram_quantile(0.99,") for e in flat)
    (decisions,) = [a for a in board["annotations"]["list"] if a["name"] == "Rollout decisions"]
    assert decisions["useValueForTime"] is True and decisions["expr"].endswith("* 1000"), "Grafana wants ms"
    assert decisions["datasource"]["uid"] == "${datasource}"


def test_dashboards_have_a_multi_select_model_variable() -> None:
    for name, board in dashboards().items():
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "model"]
        assert (var["type"], var["multi"], var["includeAll"], var["allValue"]) == ("query", True, True, ".*"), name
        query = var["query"]["query"]
        assert re.fullmatch(r"label_values\(flywheel_model_info(\{[^{}]*\})?, model\)", query), query
        assert var["definition"] == query


def test_per_model_panels_filter_on_the_model_variable_and_show_each_model() -> None:
    """A query of a per-model metric filters `model=~"$model"` and keeps `model` in every aggregation (so
    each model is its own series, named in the legend), unless Grafana repeats the panel once per model."""
    for name, board in dashboards().items():
        for panel in panels(board):
            repeated = panel.get("repeat") == "model"
            if repeated:
                assert "$model" in panel["title"], f"{name}: a repeated panel names its model"
            for target in panel["targets"]:
                where = f"{name}: panel {panel['title']!r} target {target['refId']}"
                labelled = [s for s in selectors(target["expr"]) if is_per_model(s.metric)]
                for sel in labelled:
                    assert ("model", "=~", "$model") in sel.matchers, f"{where}: {sel.metric} is not filtered"
                if not labelled or repeated:
                    continue
                for agg in aggregations(target["expr"]):
                    assert agg.clause == "by" and "model" in agg.labels, f"{where}: {agg} merges the models"
                legend = target.get("legendFormat", "")
                assert "{{model}}" in legend or target.get("format") == "table", f"{where}: legend {legend!r}"


def test_dashboard_queries_use_documented_metrics() -> None:
    documented = documented_metrics()
    for name, board in dashboards().items():
        for query in dashboard_queries(name, board):
            names = metric_names(query.expr)
            assert names, f"{query.where} names no flywheel metric"
            unknown = {base_metric(n, documented) for n in names} - set(documented) - BUILTIN_METRICS
            assert not unknown, f"{query.where} uses metrics not in docs/metrics.md: {unknown}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each query (Grafana variables substituted) as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(q.expr)}
        for i, q in enumerate(q for name, b in dashboards().items() for q in dashboard_queries(name, b))
    ]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_values_select_everything_and_load_dashboards() -> None:
    values = yaml.safe_load((MONITORING / "kube-prometheus-stack-values.yaml").read_text(encoding="utf-8"))
    spec = values["prometheus"]["prometheusSpec"]
    for key in ("serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues"):
        assert spec[key] is False, key
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    assert (sidecar["label"], sidecar["labelValue"]) == ("grafana_dashboard", "1")


def test_dashboard_config_maps_for_local_clusters_cover_every_dashboard() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    maps = [d for d in yaml.safe_load_all(result.stdout) if d]
    shipped = {}
    for cm in maps:
        assert cm["metadata"]["labels"] == {"grafana_dashboard": "1"}
        assert cm["metadata"]["name"].startswith("grafana-dashboard-")
        shipped.update(cm["data"])
    assert shipped.keys() == dashboards().keys()
    assert all(json.loads(text) == dashboards()[name] for name, text in shipped.items())


def test_rollout_only_metrics_are_the_rollout_series_a_served_model_does_not_start_with() -> None:
    """ROLLOUT_ONLY_METRICS (queries of them may be empty outside a rollout) is exactly the rollout samples a
    replica has no series of once it finds a model, so the set neither hides a missing series nor goes stale."""
    from prometheus_client import CollectorRegistry

    from flywheel.serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    ServingMetrics(registry).add_model("savings")
    declared: set[str] = set()
    sampled: set[str] = set()
    for family in registry.collect():
        if not family.name.startswith("flywheel_rollout_"):
            continue
        suffixes = {"counter": ("_total",), "histogram": HISTOGRAM_SUFFIXES}.get(family.type, ("",))
        declared.update(family.name + s for s in suffixes)
        sampled.update(s.name for s in family.samples if not s.name.endswith("_created"))
    assert declared - sampled == ROLLOUT_ONLY_METRICS
    documented = documented_metrics()
    assert {base_metric(m, documented) for m in ROLLOUT_ONLY_METRICS} <= set(documented)
