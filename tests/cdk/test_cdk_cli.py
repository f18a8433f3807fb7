"""The real `cdk synth` (CLI from .tools/) offline, cfn-lint on what it wrote, and the app manifests in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from cdk_fixtures import REPO_ROOT, CliSynth, cdk_json_context, only, with_markers

from cdk.exposure import INTERNAL, SCHEME
from cdk.manifests import (
    APP_IMAGE_PLACEHOLDER,
    BUCKET_PLACEHOLDER,
    MODEL_NAME_PLACEHOLDER,
    REGION_PLACEHOLDER,
    SCHEMA_PLACEHOLDER,
    SERVE_MODELS_PLACEHOLDER,
    VERIFY_KEY_PLACEHOLDER,
    render_overlay,
)
from cdk.settings import DeploySettings

PRUNE_LABEL = "aws.cdk.eks/prune-"
MISSING = object()


def test_cdk_synth_runs_offline_without_docker(cli_synth: CliSynth):
    assert cli_synth.docker_calls == [], "synth ran docker: image assets must be built by `cdk deploy` only"
    manifest = json.loads((cli_synth.outdir / "manifest.json").read_text())
    stack = manifest["artifacts"]["Flywheel-dev"]
    assert stack["environment"] == "aws://unknown-account/unknown-region"  # env-agnostic: no lookups
    assert not any("missing" in k.lower() for k in manifest)  # no context lookups were needed
    assets = json.loads((cli_synth.outdir / "Flywheel-dev.assets.json").read_text())
    assert len(assets["dockerImages"]) == 1  # the trainer image: recorded for deploy, not built


def test_cfn_lint_finds_no_errors(cli_synth: CliSynth):
    templates = sorted(cli_synth.outdir.glob("*.template.json"))
    assert templates
    result = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", *map(str, templates)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=1)[:4000]
    assert result.returncode & 2 == 0, result.stderr
    # What is left are warnings about DependsOn that aws-cdk-lib writes next to a Ref/GetAtt (harmless).
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}, json.dumps(findings, indent=1)[:4000]


# --- the app manifests in the template equal `kubectl kustomize k8s/overlays/eks` ------------------------


def _drop_prune_labels(docs: list[dict[str, Any]]) -> None:
    """The kubectl provider labels every object it applies (for `kubectl apply --prune`); not a difference."""
    for doc in docs:
        labels = doc.get("metadata", {}).get("labels", {})
        for key in [k for k in labels if k.startswith(PRUNE_LABEL)]:
            del labels[key]
        if "labels" in doc.get("metadata", {}) and not labels:
            del doc["metadata"]["labels"]


def _differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(a.keys() | b.keys()):
            out += _differences(a.get(key, MISSING), b.get(key, MISSING), f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}/{i}")]
    return [] if a == b else [(path, a, b)]


def _referenced(token: Any) -> set[str]:
    """Logical ids and pseudo parameters a token refers to."""
    if isinstance(token, dict):
        refs = set()
        for key, value in token.items():
            if key == "Ref":
                refs.add(value)
            elif key == "Fn::GetAtt":
                refs.add(value[0])
            else:
                refs |= _referenced(value)
        return refs
    if isinstance(token, list):
        return set().union(*map(_referenced, token)) if token else set()
    return set()


def test_app_manifests_equal_the_kustomize_output_but_for_image_and_config_values(cli_synth: CliSynth, kubectl: str):
    rendered = render_overlay(REPO_ROOT / "k8s" / "overlays" / "eks")
    _, resource = only(cli_synth.resources("Custom::AWSCDK-EKS-KubernetesResource"), "ServingClustermanifestApp")
    synthesized, tokens = with_markers(resource["Properties"]["Manifest"])
    _drop_prune_labels(synthesized)
    assert [(d["kind"], d["metadata"]["name"]) for d in synthesized] == [
        (d["kind"], d["metadata"]["name"]) for d in rendered
    ]

    repo_id, _ = only(cli_synth.resources("AWS::ECR::Repository"), "AppImagesRepository")
    bucket_id, _ = only(cli_synth.resources("AWS::S3::Bucket"), "DataBucket")
    key_id, _ = only(cli_synth.resources("AWS::KMS::Key"), "SigningKey")
    store_id, _ = only(cli_synth.resources("AWS::SecretsManager::Secret"), "AccessApiKeysStore")
    ui_key_id, _ = only(cli_synth.resources("AWS::SecretsManager::Secret"), "AccessApiKeysUiKey")
    settings = DeploySettings()  # the defaults: cdk.json sets none of these
    assert not {"imageTag", "modelName", "schema", "models", "serveModels"} & set(cdk_json_context())
    image = re.compile(rf"@@(\d+)@@\.dkr\.ecr\.@@(\d+)@@\.@@(\d+)@@/@@(\d+)@@:{re.escape(settings.image_tag)}")
    expected = {
        BUCKET_PLACEHOLDER: _marker_for(tokens, {"Ref": bucket_id}),
        REGION_PLACEHOLDER: _marker_for(tokens, {"Ref": "AWS::Region"}),
        MODEL_NAME_PLACEHOLDER: settings.model_name,
        SCHEMA_PLACEHOLDER: settings.schema,
        SERVE_MODELS_PLACEHOLDER: "",  # every registered model
        VERIFY_KEY_PLACEHOLDER: _marker_for(tokens, {"Fn::GetAtt": [key_id, "Arn"]}),  # the signing key
        # access control by default: viewer-only UI (no certificate), API keys (cdk/access.py)
        "FLYWHEEL_UI_AUTH_PLACEHOLDER": "viewer-only",
        "FLYWHEEL_UI_OIDC_SECRET_ID_PLACEHOLDER": "",
        "FLYWHEEL_UI_COOKIE_SECRET_ID_PLACEHOLDER": "",
        "FLYWHEEL_UI_ROLE_CLAIM_PLACEHOLDER": "",
        "FLYWHEEL_API_AUTH_PLACEHOLDER": "api-keys",
        "FLYWHEEL_API_KEYS_SECRET_ID_PLACEHOLDER": _marker_for(tokens, {"Ref": store_id}),
        "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS_PLACEHOLDER": _marker_for(tokens, {"Ref": ui_key_id}),
        "FLYWHEEL_API_KEY_SECRET_ID_PLACEHOLDER": _marker_for(tokens, {"Ref": ui_key_id}),
    }
    # The one other change: without uiDomain/certificateArn/allowedCidrs both load balancers are internal.
    exposure = re.compile(rf"/\d+/metadata/annotations/({re.escape(INTERNAL)}|{re.escape(SCHEME)})")
    exposed = []
    seen = dict.fromkeys([APP_IMAGE_PLACEHOLDER, *expected], 0)
    unexpected = []
    for path, want, got in _differences(rendered, synthesized):
        if want is MISSING and exposure.fullmatch(path) and got in ("true", "internal"):
            exposed.append(got)
            continue
        if want == APP_IMAGE_PLACEHOLDER and path.endswith("/image") and (match := image.fullmatch(str(got))):
            refs = set().union(*(_referenced(tokens[int(i)]) for i in match.groups()))
            assert refs == {repo_id, "AWS::URLSuffix"}, f"{path}: image built from {refs}"
        elif want not in expected or not _same(got, expected[want], tokens):
            unexpected.append((path, want, got))
            continue
        seen[want] += 1
    assert not unexpected, "the manifests differ from the overlay:\n" + "\n".join(map(str, unexpected))[:4000]
    assert seen.pop(APP_IMAGE_PLACEHOLDER) >= 2
    assert sorted(exposed) == ["internal", "internal", "true", "true"]  # both Services
    assert seen == dict.fromkeys(expected, 1)


def _marker_for(tokens: list[Any], token: Any) -> str:
    return f"@@{tokens.index(token)}@@" if token in tokens else "<absent>"


def _same(got: Any, want: str, tokens: list[Any]) -> bool:
    """Equal values; two markers are the same when they stand for the same token (a token may occur twice)."""
    marker = re.compile(r"@@(\d+)@@")
    if isinstance(got, str) and (a := marker.fullmatch(got)) and (b := marker.fullmatch(want)):
        return bool(tokens[int(a.group(1))] == tokens[int(b.group(1))])
    return bool(got == want)


def test_manifest_payloads_fit_a_custom_resource_request(cli_synth: CliSynth):
    """Each manifest and the Helm values travel in one custom-resource request: keep well under its limits."""
    for kind in ("Custom::AWSCDK-EKS-KubernetesResource", "Custom::AWSCDK-EKS-HelmChart"):
        for logical_id, resource in cli_synth.resources(kind).items():
            size = len(json.dumps(resource["Properties"]))
            assert size < 200_000, f"{logical_id}: {size} bytes"
