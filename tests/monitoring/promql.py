"""Reading the monitoring-as-code files: alert rules, dashboard queries, the metrics they name.

Shared by the offline lint (tests/monitoring) and the live Prometheus test (tests/integration).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RULES_FILE = MONITORING / "prometheus" / "rules.yaml"
RULES_TEST_FILE = MONITORING / "prometheus" / "rules_test.yaml"
DASHBOARDS_DIR = MONITORING / "grafana" / "dashboards"
METRICS_DOC = REPO / "docs" / "metrics.md"

#: Series Prometheus makes itself for every target; a query may use them without the API exporting them.
BUILTIN_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

#: Grafana's variables, replaced by values that keep a query meaningful when run straight against Prometheus:
#: "All" for the dashboard's own selectors, a one-minute window for the range ones.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "namespace": ".*",
    "instance": ".*",
    "model": ".*",
}
#: Serving metrics without a `model` label; every other flywheel_* series carries one (docs/metrics.md): the
#: name of a served model, or "" on HTTP routes that address no model.
UNLABELLED_METRICS = {"flywheel_http_requests_in_flight", "flywheel_http_requests_rejected_total"}
#: Rollout series (issue 14) that only exist while a rollout of the model runs, or, for the decision timestamp,
#: once the model has had one: a replica outside any rollout declares them on /metrics but has no sample of
#: them, so a query of them may come back empty there. (The share and the per-role request and error counters
#: are created at 0 for every served model, and so are not in this set.)
ROLLOUT_ONLY_METRICS = {
    "flywheel_rollout_model_latency_seconds_bucket",
    "flywheel_rollout_model_latency_seconds_sum",
    "flywheel_rollout_model_latency_seconds_count",
    "flywheel_rollout_shadow_compared_total",
    "flywheel_rollout_shadow_agreed_total",
    "flywheel_rollout_shadow_relative_difference_total",
    "flywheel_rollout_shadow_dropped_total",
    "flywheel_rollout_info",
    "flywheel_rollout_decision_timestamp_seconds",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_SELECTOR = re.compile(r"(?<![\w:])(flywheel_[a-z0-9_]+|up|scrape_[a-z_]+)\b(?:\s*\{([^{}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
#: An aggregation and its grouping clause, written the house way: `sum by (a, b) (...)` (or with `without`).
_AGGREGATION = re.compile(r"\b(sum|min|max|avg|count|group|stddev|stdvar)\s*(?:(by|without)\s*\(([^()]*)\)\s*)?\(")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (for messages)."""

    where: str
    expr: str


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]

    def promql(self) -> str:
        inner = ", ".join(f'{name}{op}"{value}"' for name, op, value in self.matchers)
        return f"{self.metric}{{{inner}}}"


def documented_metrics() -> dict[str, str]:
    """name -> type from the serving table of docs/metrics.md (the API's metric contract)."""
    text = METRICS_DOC.read_text(encoding="utf-8")
    section = text.split("## Serving", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`(flywheel_[a-z0-9_]+)`\s*\|\s*([a-z]+)", section, re.M)
    return dict(rows)


def base_metric(name: str, documented: dict[str, str]) -> str:
    """`foo_bucket` -> `foo` when `foo` is a documented histogram; otherwise the name itself."""
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and documented.get(stem) == "histogram":
            return stem
    return name


def variables(expr: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana variables (`$x`, `${x}`, `${x:fmt}`, `[[x]]`); unknown ones are left as they are."""
    values = GRAFANA_VARIABLES if values is None else values

    def repl(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return values.get(name, m.group(0))

    return _VARIABLE.sub(repl, expr)


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of flywheel_* metrics (and Prometheus' own per-target series) in `expr`."""
    out = []
    for m in _SELECTOR.finditer(expr):
        matchers = tuple(_MATCHER.findall(m.group(2) or ""))
        out.append(Selector(m.group(1), matchers))
    return out


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr)}


def is_per_model(metric: str) -> bool:
    """A flywheel_* metric whose series carry a `model` label (histogram suffixes included)."""
    if not metric.startswith("flywheel_"):
        return False
    stem = next((metric.removesuffix(s) for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
    return metric not in UNLABELLED_METRICS and stem not in UNLABELLED_METRICS


@dataclass(frozen=True)
class Aggregation:
    """One aggregation operator in an expression: `sum by (model, le)` -> ("sum", "by", ("model", "le"))."""

    op: str
    clause: str | None
    labels: tuple[str, ...]


def aggregations(expr: str) -> list[Aggregation]:
    out = []
    for m in _AGGREGATION.finditer(expr):
        labels = tuple(label.strip() for label in (m.group(3) or "").split(",") if label.strip())
        out.append(Aggregation(m.group(1), m.group(2), labels))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are not panels."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target's expr, every Prometheus annotation's expr and every query variable's selector
    (label_values(...) unwrapped)."""
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
            out.append(Query(where, target.get("expr", "")))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append(Query(f"{name}: annotation {annotation.get('name')!r}", annotation["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        m = _LABEL_VALUES.match(text)
        out.append(Query(f"{name}: variable {var['name']!r}", m.group(1) if m else text))
    return out
