"""Render the app's manifests from `k8s/overlays/eks` with kustomize and fill in what only the stack knows.

The overlay is the single source of the manifests: nothing here re-types them. Only three kinds of value are
replaced, each one a placeholder the overlay promises (see the k8s contract in docs/deploy.md).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

APP_IMAGE_PLACEHOLDER = "flywheel-app:latest"
BUCKET_PLACEHOLDER = "FLYWHEEL_BUCKET_PLACEHOLDER"
REGION_PLACEHOLDER = "AWS_REGION_PLACEHOLDER"
APP_NAMESPACE = "flywheel"
APP_SERVICE_ACCOUNT = "flywheel-app"  # the API pods
UI_SERVICE_ACCOUNT = "flywheel-ui"  # the UI pods (a role of their own: they also write)
API_SERVICE = "flywheel-api"
UI_SERVICE = "flywheel-ui"

Manifest = dict[str, Any]


class ManifestError(RuntimeError):
    """The overlay could not be rendered, or it no longer keeps the contract this stack relies on."""


def render_overlay(overlay: Path) -> list[Manifest]:
    """`kubectl kustomize <overlay>`, parsed; fails with a clear message when kubectl or the overlay is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError(
            "kubectl is needed at synth to render k8s/overlays/eks (`kubectl kustomize`); install it "
            "(make tools) and retry"
        )
    if not (overlay / "kustomization.yaml").is_file() and not (overlay / "kustomization.yml").is_file():
        raise ManifestError(f"no kustomization in {overlay}")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise ManifestError(f"kubectl kustomize {overlay} failed:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def substitute(manifests: list[Manifest], *, image: str, bucket: str, region: str) -> list[Manifest]:
    """Copy of `manifests` with the app image, bucket and region filled in; each placeholder must occur."""
    out = copy.deepcopy(manifests)
    found = {APP_IMAGE_PLACEHOLDER: 0, BUCKET_PLACEHOLDER: 0, REGION_PLACEHOLDER: 0}
    for doc in out:
        for container in _containers(doc):
            if container.get("image") == APP_IMAGE_PLACEHOLDER:
                container["image"] = image
                found[APP_IMAGE_PLACEHOLDER] += 1
        if doc.get("kind") == "ConfigMap":
            data = doc.get("data") or {}
            for key, value in data.items():
                if value == BUCKET_PLACEHOLDER:
                    data[key] = bucket
                    found[BUCKET_PLACEHOLDER] += 1
                elif value == REGION_PLACEHOLDER:
                    data[key] = region
                    found[REGION_PLACEHOLDER] += 1
    missing = [name for name, count in found.items() if count == 0]
    if missing:
        raise ManifestError(f"the eks overlay no longer contains {', '.join(missing)}; nothing to substitute")
    return out


def require_objects(manifests: list[Manifest]) -> None:
    """Fail when the objects the stack wires to AWS (namespace, ServiceAccount, Services) are missing."""
    have = {(doc.get("kind"), doc.get("metadata", {}).get("name")) for doc in manifests}
    want = {
        ("Namespace", APP_NAMESPACE),
        ("ServiceAccount", APP_SERVICE_ACCOUNT),
        ("ServiceAccount", UI_SERVICE_ACCOUNT),
        ("Service", API_SERVICE),
        ("Service", UI_SERVICE),
    }
    if missing := want - have:
        names = ", ".join(f"{kind}/{name}" for kind, name in sorted(missing))
        raise ManifestError(f"the eks overlay lacks {names}")


def service_port(manifests: list[Manifest], name: str) -> int:
    """The first port of Service `name` (for the URLs in the stack outputs)."""
    for doc in manifests:
        if doc.get("kind") == "Service" and doc.get("metadata", {}).get("name") == name:
            return int(doc["spec"]["ports"][0]["port"])
    raise ManifestError(f"no Service {name}")


def _containers(doc: Manifest) -> Iterator[dict[str, Any]]:
    """Every container and init container of every pod template in `doc`, whatever the workload kind."""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    yield from (c for c in value if isinstance(c, dict))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
