"""Render the app's manifests from `k8s/overlays/eks` with kustomize and fill in what only the stack knows.

The overlay is the single source of the manifests: nothing here re-types them. Only the app image and the
placeholders in the `flywheel-config` ConfigMap are replaced, each one a placeholder the overlay promises (the
contract is in k8s/README.md and docs/deploy.md). Synth fails if one is missing or any is left over.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

APP_IMAGE_PLACEHOLDER = "flywheel-app:latest"
BUCKET_PLACEHOLDER = "FLYWHEEL_BUCKET_PLACEHOLDER"
REGION_PLACEHOLDER = "AWS_REGION_PLACEHOLDER"
MODEL_NAME_PLACEHOLDER = "FLYWHEEL_MODEL_NAME_PLACEHOLDER"
SCHEMA_PLACEHOLDER = "FLYWHEEL_SCHEMA_PLACEHOLDER"
SERVE_MODELS_PLACEHOLDER = "FLYWHEEL_SERVE_MODELS_PLACEHOLDER"
VERIFY_KEY_PLACEHOLDER = "FLYWHEEL_VERIFY_KMS_KEY_ID_PLACEHOLDER"
#: Key of the `flywheel-config` ConfigMap -> the placeholder the eks overlay gives it. `substitute` needs a
#: value for each; the model name and schema are the ones the trainer gets (the stack passes one mapping).
#: FLYWHEEL_SERVE_MODELS may be filled in with "" (serve every registered model); FLYWHEEL_VERIFY_KMS_KEY_ID is
#: the ARN of the KMS key the trainer signs manifests with (cdk/signing_key.py).
#: Access control (docs/security.md, cdk/access.py): how the UI signs users in and where the pods find their
#: secrets (Secrets Manager ids). A value that does not apply to the exposure mode is filled in with "".
ACCESS_CONFIG_KEYS = (
    "FLYWHEEL_UI_AUTH",
    "FLYWHEEL_UI_OIDC_SECRET_ID",
    "FLYWHEEL_UI_COOKIE_SECRET_ID",
    "FLYWHEEL_UI_ROLE_CLAIM",
    "FLYWHEEL_API_AUTH",
    "FLYWHEEL_API_KEYS_SECRET_ID",
    "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS",
    "FLYWHEEL_API_KEY_SECRET_ID",
)
CONFIG_PLACEHOLDERS = {
    "FLYWHEEL_BUCKET": BUCKET_PLACEHOLDER,
    "AWS_REGION": REGION_PLACEHOLDER,
    "FLYWHEEL_MODEL_NAME": MODEL_NAME_PLACEHOLDER,
    "FLYWHEEL_SCHEMA": SCHEMA_PLACEHOLDER,
    "FLYWHEEL_SERVE_MODELS": SERVE_MODELS_PLACEHOLDER,
    "FLYWHEEL_VERIFY_KMS_KEY_ID": VERIFY_KEY_PLACEHOLDER,
    **{key: f"{key}_PLACEHOLDER" for key in ACCESS_CONFIG_KEYS},
}
#: What a placeholder looks like, known or not: any such text left after `substitute` fails the synth (as does
#: the app image placeholder as a whole value outside a container's `image`).
_LEFTOVER = re.compile(r"[A-Z0-9_]*_PLACEHOLDER\b")
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


def substitute(manifests: list[Manifest], *, image: str, config: Mapping[str, str]) -> list[Manifest]:
    """Copy of `manifests` with the app image and the ConfigMap placeholders filled in.

    `config` maps each key of CONFIG_PLACEHOLDERS (`FLYWHEEL_BUCKET`, `AWS_REGION`, `FLYWHEEL_MODEL_NAME`,
    `FLYWHEEL_SCHEMA`, `FLYWHEEL_SERVE_MODELS`, `FLYWHEEL_VERIFY_KMS_KEY_ID` and the ACCESS_CONFIG_KEYS) to its
    value. Every placeholder must occur, and none may be left anywhere afterwards.
    """
    if set(config) != set(CONFIG_PLACEHOLDERS):
        raise ManifestError(f"config must give exactly {', '.join(sorted(CONFIG_PLACEHOLDERS))}; got {sorted(config)}")
    values = {CONFIG_PLACEHOLDERS[key]: value for key, value in config.items()}
    out = copy.deepcopy(manifests)
    found = dict.fromkeys([APP_IMAGE_PLACEHOLDER, *values], 0)
    for doc in out:
        for container in _containers(doc):
            if container.get("image") == APP_IMAGE_PLACEHOLDER:
                container["image"] = image
                found[APP_IMAGE_PLACEHOLDER] += 1
        if doc.get("kind") == "ConfigMap":
            data = doc.get("data") or {}
            for key, value in data.items():
                if value in values:
                    found[value] += 1
                    data[key] = values[value]
    missing = [name for name, count in found.items() if count == 0]
    if missing:
        raise ManifestError(f"the eks overlay no longer contains {', '.join(missing)}; nothing to substitute")
    if leftover := sorted(_leftovers(out)):
        raise ManifestError(
            "placeholders left over after substitution (only the app image and the flywheel-config values "
            f"{', '.join(CONFIG_PLACEHOLDERS.values())} are filled in): " + "; ".join(leftover)
        )
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


def _leftovers(node: Any, path: str = "") -> Iterator[str]:
    """`path: text` for every key or string value under `node` that still looks like a placeholder."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}/{key}"
            if isinstance(key, str) and _LEFTOVER.search(key):
                yield f"{where} (key)"
            yield from _leftovers(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leftovers(value, f"{path}/{i}")
    elif isinstance(node, str) and (_LEFTOVER.search(node) or node == APP_IMAGE_PLACEHOLDER):
        yield f"{path}: {node}"


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
