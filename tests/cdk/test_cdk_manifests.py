"""Rendering and substitution of the eks overlay, and the monitoring/ loaders, on small inputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdk.manifests import (
    ACCESS_CONFIG_KEYS,
    APP_IMAGE_PLACEHOLDER,
    BUCKET_PLACEHOLDER,
    CONFIG_PLACEHOLDERS,
    MODEL_NAME_PLACEHOLDER,
    REGION_PLACEHOLDER,
    SCHEMA_PLACEHOLDER,
    SERVE_MODELS_PLACEHOLDER,
    VERIFY_KEY_PLACEHOLDER,
    ManifestError,
    render_overlay,
    require_objects,
    substitute,
)
from cdk.monitoring_assets import MonitoringConfigError, chart_values, dashboards

DOCS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flywheel"}},
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "flywheel-config", "namespace": "flywheel"},
        "data": {
            "FLYWHEEL_BUCKET": BUCKET_PLACEHOLDER,
            "AWS_REGION": REGION_PLACEHOLDER,
            "FLYWHEEL_MODEL_NAME": MODEL_NAME_PLACEHOLDER,
            "FLYWHEEL_SCHEMA": SCHEMA_PLACEHOLDER,
            "FLYWHEEL_SERVE_MODELS": SERVE_MODELS_PLACEHOLDER,
            "FLYWHEEL_VERIFY_KMS_KEY_ID": VERIFY_KEY_PLACEHOLDER,
            **{key: f"{key}_PLACEHOLDER" for key in ACCESS_CONFIG_KEYS},
            "OTHER": "kept",
        },
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "flywheel"},
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [{"name": "init", "image": APP_IMAGE_PLACEHOLDER}],
                    "containers": [{"name": "api", "image": APP_IMAGE_PLACEHOLDER}, {"name": "x", "image": "busybox"}],
                }
            }
        },
    },
]


CONFIG = {
    "FLYWHEEL_BUCKET": "my-bucket",
    "AWS_REGION": "eu-west-1",
    "FLYWHEEL_MODEL_NAME": "churn",
    "FLYWHEEL_SCHEMA": "churn-schema",
    "FLYWHEEL_SERVE_MODELS": "",  # empty is a value: every registered model
    "FLYWHEEL_VERIFY_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/abc",
    "FLYWHEEL_UI_AUTH": "viewer-only",
    "FLYWHEEL_UI_OIDC_SECRET_ID": "",  # empty where a value does not apply (no OIDC without a certificate)
    "FLYWHEEL_UI_COOKIE_SECRET_ID": "",
    "FLYWHEEL_UI_ROLE_CLAIM": "",
    "FLYWHEEL_API_AUTH": "api-keys",
    "FLYWHEEL_API_KEYS_SECRET_ID": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:keys-AbCdEf",
    "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ui-key-AbCdEf",
    "FLYWHEEL_API_KEY_SECRET_ID": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ui-key-AbCdEf",
}


def test_substitute_fills_every_placeholder_and_nothing_else():
    out = substitute(DOCS, image="repo/app:abc", config=CONFIG)
    assert out[1]["data"] == {**CONFIG, "OTHER": "kept"}
    pod = out[2]["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["initContainers"] + pod["containers"]] == [
        "repo/app:abc",
        "repo/app:abc",
        "busybox",
    ]
    assert DOCS[1]["data"]["FLYWHEEL_BUCKET"] == BUCKET_PLACEHOLDER  # the input is not modified
    assert set(CONFIG_PLACEHOLDERS) == set(CONFIG)


@pytest.mark.parametrize("key", sorted(CONFIG_PLACEHOLDERS))
def test_substitute_fails_when_the_overlay_drops_a_placeholder(key: str):
    data = {k: v for k, v in DOCS[1]["data"].items() if k != key}
    with pytest.raises(ManifestError, match=f"no longer contains {CONFIG_PLACEHOLDERS[key]}"):
        substitute([DOCS[0], {**DOCS[1], "data": data}, DOCS[2]], image="i", config=CONFIG)


def test_substitute_fails_when_a_value_for_a_placeholder_is_missing():
    with pytest.raises(ManifestError, match="config must give exactly"):
        substitute(DOCS, image="i", config={k: v for k, v in CONFIG.items() if k != "FLYWHEEL_SCHEMA"})


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("env", MODEL_NAME_PLACEHOLDER),  # a known placeholder outside the ConfigMap is not filled in
        ("env", "s3://FLYWHEEL_BUCKET_PLACEHOLDER/data"),  # nor one inside a longer value
        ("env", "NEW_PLACEHOLDER"),  # an overlay's new placeholder that nothing here knows
        ("annotation", APP_IMAGE_PLACEHOLDER),  # the image anywhere but a container's image
    ],
)
def test_substitute_fails_when_a_placeholder_is_left_over(where: str, text: str):
    docs = copy.deepcopy(DOCS)
    if where == "env":
        docs[2]["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": text}]
    else:
        docs[2]["metadata"]["annotations"] = {"example.com/image": text}
    with pytest.raises(ManifestError, match="left over") as error:
        substitute(docs, image="i", config=CONFIG)
    assert text in str(error.value)


def test_require_objects_names_what_is_missing():
    with pytest.raises(ManifestError, match="ServiceAccount/flywheel-app"):
        require_objects(DOCS)
    accounts = [{"kind": "ServiceAccount", "metadata": {"name": n}} for n in ("flywheel-app", "flywheel-ui")]
    services = [{"kind": "Service", "metadata": {"name": n}} for n in ("flywheel-api", "flywheel-ui")]
    require_objects([DOCS[0], *accounts, *services])  # complete
    with pytest.raises(ManifestError, match=r"lacks ServiceAccount/flywheel-ui$"):
        require_objects([DOCS[0], accounts[0], *services])  # the UI's Pod Identity would bind to nothing


def test_render_overlay_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubectl: str):
    with pytest.raises(ManifestError, match="no kustomization"):
        render_overlay(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(ManifestError, match=r"kubectl kustomize .* failed"):
        render_overlay(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ManifestError, match="kubectl is needed"):
        render_overlay(tmp_path)


def test_chart_values_add_the_rule_groups(tmp_path: Path):
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "kube-prometheus-stack-values.yaml").write_text("grafana:\n  adminPassword: null\n")
    groups = [{"name": "g", "rules": [{"alert": "A", "expr": "1"}]}]
    (tmp_path / "prometheus" / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    values = chart_values(tmp_path)
    assert values == {
        "grafana": {"adminPassword": None},
        "additionalPrometheusRulesMap": {"flywheel": {"groups": groups}},
    }


def test_dashboards_must_exist_and_be_json(tmp_path: Path):
    with pytest.raises(MonitoringConfigError, match="no Grafana dashboards"):
        dashboards(tmp_path)
    folder = tmp_path / "grafana" / "dashboards"
    folder.mkdir(parents=True)
    (folder / "Serving Overview.json").write_text('{"title": "x"}')
    assert [d.name for d in dashboards(tmp_path)] == ["serving-overview"]
    (folder / "broken.json").write_text("{")
    with pytest.raises(MonitoringConfigError, match=r"broken\.json"):
        dashboards(tmp_path)
