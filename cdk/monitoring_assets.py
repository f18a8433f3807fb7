"""Read the Prometheus/Grafana configuration from `monitoring/` for the kube-prometheus-stack chart."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

VALUES_FILE = "kube-prometheus-stack-values.yaml"
RULES_FILE = "prometheus/rules.yaml"
DASHBOARDS_DIR = "grafana/dashboards"
#: Key under the chart's `additionalPrometheusRulesMap`; the chart turns it into a PrometheusRule object.
RULES_KEY = "flywheel"


class MonitoringConfigError(RuntimeError):
    """A file in monitoring/ is missing or not what the chart expects."""


@dataclass(frozen=True)
class Dashboard:
    """One Grafana dashboard, shipped as a ConfigMap the Grafana sidecar picks up."""

    name: str
    json_text: str


def chart_values(monitoring_dir: Path) -> dict[str, Any]:
    """The Helm values file with the Prometheus rule groups added under `additionalPrometheusRulesMap`."""
    values = _load_yaml(monitoring_dir / VALUES_FILE)
    if not isinstance(values, dict):
        raise MonitoringConfigError(f"{VALUES_FILE} must be a mapping of Helm values")
    rules = _load_yaml(monitoring_dir / RULES_FILE)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list) or not rules["groups"]:
        raise MonitoringConfigError(f"{RULES_FILE} must hold a non-empty `groups:` list")
    rules_map = dict(values.get("additionalPrometheusRulesMap") or {})
    rules_map[RULES_KEY] = {"groups": rules["groups"]}
    return {**values, "additionalPrometheusRulesMap": rules_map}


def dashboards(monitoring_dir: Path) -> list[Dashboard]:
    """Every `*.json` under grafana/dashboards, validated as JSON, in name order."""
    folder = monitoring_dir / DASHBOARDS_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise MonitoringConfigError(f"no Grafana dashboards in {folder}")
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise MonitoringConfigError(f"{path} is not valid JSON: {e}") from e
        name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")
        out.append(Dashboard(name=name, json_text=text))
    return out


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise MonitoringConfigError(f"missing {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise MonitoringConfigError(f"{path} is not valid YAML: {e}") from e
