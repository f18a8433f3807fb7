"""Every kustomize overlay renders, validates against the pinned Kubernetes version's schemas (and the
prometheus-operator schemas for its custom resources), and keeps the policies and contracts in k8s/README.md."""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.k8s.policy import Obj, container_violations, pod_spec, ref, selector_violations

REPO = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = REPO / "k8s" / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
#: The Kubernetes minor the manifests are validated against: the EKS version the CDK app deploys.
KUBERNETES_VERSION = "1.35"
CRD_VALIDATOR = REPO / "tests" / "k8s" / "crd" / "validate.mjs"
CUSTOM_GROUPS = ("monitoring.coreos.com/",)

API_DRAIN_SECONDS = 20  # the API finishes in-flight requests within this after SIGTERM
REQUIRED_CONFIG_KEYS = {
    "FLYWHEEL_BUCKET",
    "FLYWHEEL_MODEL_NAME",
    "FLYWHEEL_SCHEMA",
    "FLYWHEEL_SERVE_MODELS",
    "AWS_REGION",
    "FLYWHEEL_API_URL",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make tools` (see scripts/install-tools.sh)")
    return path


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", str(OVERLAYS_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[Obj]:
    """The overlay's objects (a fresh copy: tests may mutate it)."""
    return copy.deepcopy(list(_render(overlay)))


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    for o in objects:
        if o.get("kind") == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind}/{name} among {[ref(o) for o in objects]}")


def container(objects: list[Obj], deployment: str) -> Obj:
    return pod_spec(find(objects, "Deployment", deployment))["containers"][0]


def is_custom(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).startswith(CUSTOM_GROUPS)


def schema_errors(obj: Obj) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{ref(obj)}: {e.message} at {'/'.join(str(p) for p in e.path)}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{ref(obj)}: no schema ({e})"]
    return []


def operator_schema_errors(objects: list[Obj]) -> list[str]:
    """Validate prometheus-operator objects with tests/k8s/crd (node + the operator's generated schemas)."""
    if not (CRD_VALIDATOR.parent / "node_modules").is_dir():
        pytest.fail("tests/k8s/crd/node_modules is missing; run `make tools` (npm ci --prefix tests/k8s/crd)")
    result = subprocess.run(
        [_tool("node"), str(CRD_VALIDATOR)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [f"{r['kind']}/{r['name']}: {err}" for r in json.loads(result.stdout) for err in r["errors"]]


def test_both_overlays_exist() -> None:
    assert {"eks", "local"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_contract_objects(overlay: str) -> None:
    objects = render(overlay)
    for kind, name in [
        ("Namespace", "flywheel"),
        ("ServiceAccount", "flywheel-app"),
        ("ServiceAccount", "flywheel-ui"),
        ("ConfigMap", "flywheel-config"),
        ("Deployment", "flywheel-api"),
        ("Deployment", "flywheel-ui"),
        ("Service", "flywheel-api"),
        ("Service", "flywheel-ui"),
        ("HorizontalPodAutoscaler", "flywheel-api"),
        ("PodDisruptionBudget", "flywheel-api"),
        ("PodDisruptionBudget", "flywheel-ui"),
        ("NetworkPolicy", "default-deny"),
        ("ServiceMonitor", "flywheel-api"),
    ]:
        find(objects, kind, name)
    for name in ("flywheel-api", "flywheel-ui"):
        labels = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name
        assert labels["app.kubernetes.io/part-of"] == "flywheel"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lives_in_the_flywheel_namespace(overlay: str) -> None:
    for obj in render(overlay):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "flywheel", ref(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_are_valid_for_the_pinned_kubernetes(overlay: str) -> None:
    builtin = [o for o in render(overlay) if not is_custom(o)]
    assert builtin
    errors = [e for o in builtin for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_are_valid_for_prometheus_operator(overlay: str) -> None:
    custom = [o for o in render(overlay) if is_custom(o)]
    assert [o["kind"] for o in custom] == ["ServiceMonitor"]
    errors = operator_schema_errors(custom)
    assert not errors, "\n".join(errors)


def test_validators_reject_broken_objects() -> None:
    """Both validators are live: an unknown field, a wrong type and a missing selector are caught."""
    objects = render("eks")
    deployment = find(objects, "Deployment", "flywheel-api")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert schema_errors(deployment)
    service = find(objects, "Service", "flywheel-api")
    service["spec"]["ports"][0]["port"] = "eighty"
    assert schema_errors(service)
    monitor = find(objects, "ServiceMonitor", "flywheel-api")
    del monitor["spec"]["selector"]
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    errors = operator_schema_errors([monitor])
    assert any("selector" in e for e in errors), errors
    assert any("interval" in e for e in errors), errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_have_limits_probes_and_a_locked_down_security_context(overlay: str) -> None:
    violations = container_violations(render(overlay))
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_labels_and_ports_line_up(overlay: str) -> None:
    violations = selector_violations(render(overlay))
    assert not violations, "\n".join(violations)


def test_policy_checks_catch_violations() -> None:
    objects = render("eks")
    api = container(objects, "flywheel-api")
    del api["resources"]["limits"]
    api["securityContext"]["readOnlyRootFilesystem"] = False
    api["readinessProbe"]["httpGet"]["port"] = "nope"
    del container(objects, "flywheel-ui")["livenessProbe"]
    find(objects, "Service", "flywheel-ui")["spec"]["selector"] = {"app.kubernetes.io/name": "nope"}
    find(objects, "ServiceMonitor", "flywheel-api")["spec"]["endpoints"][0]["port"] = "web"
    find(objects, "HorizontalPodAutoscaler", "flywheel-api")["spec"]["scaleTargetRef"]["name"] = "gone"
    find(objects, "Deployment", "flywheel-ui")["spec"]["template"]["spec"]["serviceAccountName"] = "flywheel-admin"
    found = "\n".join(container_violations(objects) + selector_violations(objects))
    for expected in [
        "container api: no limits.cpu",
        "container api: readOnlyRootFilesystem is not true",
        "container api: readinessProbe port 'nope' is not a container port",
        "container ui: no livenessProbe",
        "Service/flywheel/flywheel-ui: selector",
        "endpoint port 'web' is not a named port",
        "scaleTargetRef Deployment/gone does not exist",
        "Deployment/flywheel/flywheel-ui: serviceAccountName 'flywheel-admin' is not a ServiceAccount",
    ]:
        assert expected in found, f"{expected!r} not reported in:\n{found}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_rolls_out_without_capacity_loss_and_drains(overlay: str) -> None:
    objects = render(overlay)
    deployment = find(objects, "Deployment", "flywheel-api")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = pod_spec(deployment)
    api = spec["containers"][0]
    assert api["command"] == ["flywheel", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert api["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = spec["terminationGracePeriodSeconds"]
    assert pre_stop + API_DRAIN_SECONDS <= grace <= pre_stop + API_DRAIN_SECONDS + 15
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    assert spec["serviceAccountName"] == "flywheel-app"
    hpa = find(objects, "HorizontalPodAutoscaler", "flywheel-api")["spec"]
    assert hpa["minReplicas"] >= 2
    assert find(objects, "PodDisruptionBudget", "flywheel-api")["spec"]["minAvailable"] < hpa["minReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ui_serves_streamlit_with_a_writable_home(overlay: str) -> None:
    objects = render(overlay)
    spec = pod_spec(find(objects, "Deployment", "flywheel-ui"))
    ui = spec["containers"][0]
    assert ui["command"] == ["flywheel", "ui", "--host", "0.0.0.0", "--port", "8501"]
    assert ui["ports"] == [{"name": "http", "containerPort": 8501, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert ui[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"] for m in ui["volumeMounts"] if m["name"] in empty_dirs}
    assert {"/home/flywheel", "/tmp"} <= mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ui_runs_two_replicas_that_a_drain_never_takes_both_of(overlay: str) -> None:
    objects = render(overlay)
    deployment = find(objects, "Deployment", "flywheel-ui")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    keys = {c["topologyKey"] for c in pod_spec(deployment)["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    pdb = find(objects, "PodDisruptionBudget", "flywheel-ui")["spec"]
    assert pdb["selector"] == {"matchLabels": {"app.kubernetes.io/name": "flywheel-ui"}}
    assert 1 <= pdb["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_mounts_a_kubernetes_api_token(overlay: str) -> None:
    """Nothing here calls the Kubernetes API; Pod Identity injects a projected token of its own (audience
    pods.eks.amazonaws.com) regardless of automountServiceAccountToken."""
    objects = render(overlay)
    loads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert {w["metadata"]["name"] for w in loads} >= {"flywheel-api", "flywheel-ui"}
    for w in loads:
        assert pod_spec(w).get("automountServiceAccountToken") is False, ref(w)
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, ref(account)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_and_ui_run_as_service_accounts_of_their_own(overlay: str) -> None:
    """The UI writes to S3 (uploads, the alias): its pods must not share the API's read-only identity, and
    no other workload may use either account (each is bound to an IAM role by Pod Identity)."""
    objects = render(overlay)
    users: dict[str, list[str]] = {}
    for w in objects:
        if w["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            account = pod_spec(w).get("serviceAccountName") or "default"
            users.setdefault(account, []).append(w["metadata"]["name"])
    assert users["flywheel-app"] == ["flywheel-api"]
    assert users["flywheel-ui"] == ["flywheel-ui"]
    app, ui = find(objects, "ServiceAccount", "flywheel-app"), find(objects, "ServiceAccount", "flywheel-ui")
    assert app.get("automountServiceAccountToken") == ui.get("automountServiceAccountToken")  # set up alike
