"""The overlays' contract with the rest of the system: load balancers, the metrics Service Prometheus scrapes, the
ConfigMap and the placeholders the CDK app fills in, the local overlay, the pinned Kubernetes version.
Rendering and lookups are shared with tests/k8s/test_manifests.py."""

from __future__ import annotations

import re

import pytest

from tests.k8s.test_manifests import KUBERNETES_VERSION, OVERLAYS, REPO, REQUIRED_CONFIG_KEYS, container, find, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_apps_are_behind_load_balancers(overlay: str) -> None:
    objects = render(overlay)
    for name in ("flywheel-api", "flywheel-ui"):
        service = find(objects, "Service", name)
        assert service["spec"]["type"] == "LoadBalancer"
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert find(objects, "Service", "flywheel-api")["spec"]["ports"][0]["port"] == 8080


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_api_metrics(overlay: str) -> None:
    objects = render(overlay)
    monitor = find(objects, "ServiceMonitor", "flywheel-api")["spec"]
    selector = monitor["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "flywheel-api", "app.kubernetes.io/component": "metrics"}
    assert monitor["namespaceSelector"] == {"matchNames": ["flywheel"]}
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("metrics", "/metrics")]
    # It selects the in-cluster metrics Service only, never the public one, which carries no metrics port.
    selected = [o for o in objects if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["flywheel-api-metrics"]
    assert selected[0]["spec"]["type"] == "ClusterIP"
    public = find(objects, "Service", "flywheel-api")["spec"]
    assert [p["targetPort"] for p in public["ports"]] == ["http"]
    # The job label Prometheus gives the targets is that Service's app.kubernetes.io/name, as the rules select.
    assert monitor["jobLabel"] == "app.kubernetes.io/name"
    rules = (REPO / "monitoring" / "prometheus" / "rules.yaml").read_text()
    assert 'job="flywheel-api"' in rules


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_has_every_setting_and_a_stable_name(overlay: str) -> None:
    objects = render(overlay)
    data = find(objects, "ConfigMap", "flywheel-config")["data"]
    assert set(data) >= REQUIRED_CONFIG_KEYS
    if overlay != "eks":  # the eks overlay leaves the model to the CDK app (next test)
        assert data["FLYWHEEL_MODEL_NAME"] == "savings"
        assert data["FLYWHEEL_SCHEMA"] == "savings"
        assert data["FLYWHEEL_SERVE_MODELS"] == ""  # every registered model
    assert data["FLYWHEEL_API_URL"] == "http://flywheel-api.flywheel.svc:8080"
    for name in ("flywheel-api", "flywheel-ui"):
        refs = [e["configMapRef"]["name"] for e in container(objects, name)["envFrom"]]
        assert refs == ["flywheel-config"]


def test_eks_overlay_keeps_the_placeholders_the_cdk_app_substitutes() -> None:
    objects = render("eks")
    data = find(objects, "ConfigMap", "flywheel-config")["data"]
    assert data["FLYWHEEL_BUCKET"] == "FLYWHEEL_BUCKET_PLACEHOLDER"
    assert data["AWS_REGION"] == "AWS_REGION_PLACEHOLDER"
    # Filled in from the CDK context modelName/schema (the default model, the values the trainer gets) and
    # serveModels (the models the pods serve; empty = every registered one).
    assert data["FLYWHEEL_MODEL_NAME"] == "FLYWHEEL_MODEL_NAME_PLACEHOLDER"
    assert data["FLYWHEEL_SCHEMA"] == "FLYWHEEL_SCHEMA_PLACEHOLDER"
    assert data["FLYWHEEL_SERVE_MODELS"] == "FLYWHEEL_SERVE_MODELS_PLACEHOLDER"
    # The ARN of the stack's KMS signing key: the API pods verify each manifest with it (docs/security.md).
    assert data["FLYWHEEL_VERIFY_KMS_KEY_ID"] == "FLYWHEEL_VERIFY_KMS_KEY_ID_PLACEHOLDER"
    placeholders = {v for v in data.values() if v.endswith("_PLACEHOLDER")}
    keys = (
        "FLYWHEEL_BUCKET",
        "AWS_REGION",
        "FLYWHEEL_MODEL_NAME",
        "FLYWHEEL_SCHEMA",
        "FLYWHEEL_SERVE_MODELS",
        "FLYWHEEL_VERIFY_KMS_KEY_ID",
        # access control (issue 12): filled in from the CDK context and the stack's secrets (cdk/access.py)
        "FLYWHEEL_UI_AUTH",
        "FLYWHEEL_UI_OIDC_SECRET_ID",
        "FLYWHEEL_UI_COOKIE_SECRET_ID",
        "FLYWHEEL_UI_ROLE_CLAIM",
        "FLYWHEEL_API_AUTH",
        "FLYWHEEL_API_KEYS_SECRET_ID",
        "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS",
        "FLYWHEEL_API_KEY_SECRET_ID",
    )
    assert placeholders == {f"{k}_PLACEHOLDER" for k in keys}
    images = {container(objects, n)["image"] for n in ("flywheel-api", "flywheel-ui")}
    assert images == {"flywheel-app:latest"}
    for name in ("flywheel-app", "flywheel-ui"):
        account = find(objects, "ServiceAccount", name)
        assert not (account["metadata"].get("annotations") or {}), "Pod Identity needs no role annotation"


def test_eks_services_get_network_load_balancers() -> None:
    for name in ("flywheel-api", "flywheel-ui"):
        annotations = find(render("eks"), "Service", name)["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"


def test_local_overlay_runs_without_aws() -> None:
    objects = render("local")
    data = find(objects, "ConfigMap", "flywheel-config")["data"]
    assert data["AWS_ENDPOINT_URL"] == "http://flywheel-s3.flywheel.svc:5000"
    assert find(objects, "Service", "flywheel-s3")["spec"]["ports"][0]["port"] == 5000
    assert container(objects, "flywheel-api")["image"] == "flywheel-app:dev"
    assert container(objects, "flywheel-api")["imagePullPolicy"] == "IfNotPresent"
    # API keys as in the cloud: the store from a Secret the developer makes, never auth off
    assert data["FLYWHEEL_API_AUTH"] == "api-keys"
    mounts = {m["mountPath"]: m["name"] for m in container(objects, "flywheel-api")["volumeMounts"]}
    assert data["FLYWHEEL_API_KEYS_FILE"].rsplit("/", 1)[0] in mounts
    ui_env = {e["name"]: e for e in container(objects, "flywheel-ui")["env"]}
    assert ui_env["FLYWHEEL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "flywheel-api-keys", "key": "ui.key"}


def test_pinned_kubernetes_version_is_the_one_the_cdk_app_deploys() -> None:
    settings = (REPO / "cdk" / "settings.py").read_text()
    match = re.search(r'kubernetes_version:\s*str\s*=\s*"([0-9.]+)"', settings)
    assert match, "cdk/settings.py no longer declares kubernetes_version; update this test"
    assert match.group(1) == KUBERNETES_VERSION
