"""Shared helpers of the CDK tests (a module of its own: `conftest` is not importable by name)."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_CLI = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "cdk"
STACK_NAME = "Flywheel-dev"
ADMIN_ROLE = "arn:aws:iam::123456789012:role/flywheel-admins"
#: A production-like deployment from context strings (as `cdk deploy -c key=value` passes them): the `prod`
#: fixture (test_cdk_variant, test_cdk_registrations).
PROD_CONTEXT = {
    "envName": "prod",
    "kubernetesVersion": "1.36",
    "nodeInstanceTypes": "m6i.large,m5.large",
    "clusterEndpointCidrs": "203.0.113.0/24",
    "adminRoleArn": ADMIN_ROLE,
    "alarmEmail": "ops@example.com",
    "retainData": "false",
    "trainerReservedConcurrency": "2",
    "imageTag": "3f2c1ab",
    "modelName": "churn",
    "schema": "churn",
    # a built-in by name, another by name, and a schema file by its path in the repository
    "models": "churn=churn,savings=savings,churn-eu=flywheel/schemas/churn.json",
    "serveModels": "churn,savings",
    "trainerJobVcpu": "8",
    "trainerJobMemoryMib": "32768",
    "trainerJobTimeoutMinutes": "600",
    "trainerJobMaxVcpus": "32",
}

# jsii runs on the machine's Node 20 and warns loudly about its end of life; the warning is not a test result.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
if str(REPO_ROOT) not in sys.path:  # `import cdk` is the CDK app package at the repository root
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Synth:
    """A synthesized cloud assembly: its directory and the stack template as a dict."""

    outdir: Path
    template: dict[str, Any]

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource, for every resource of `type_`."""
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}


@dataclass
class InProcessSynth(Synth):
    """The in-process synth keeps the stack object too."""

    stack: Any


@dataclass
class CliSynth(Synth):
    """What `cdk synth` printed, and what tried to run docker."""

    output: str
    docker_calls: list[str]


def cdk_json_context() -> dict[str, Any]:
    """The context (settings and feature flags) the CLI passes from cdk.json, for apps built in-process."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def only(resources: dict[str, dict[str, Any]], prefix: str) -> tuple[str, dict[str, Any]]:
    """The one resource whose logical id starts with `prefix`."""
    found = [(k, v) for k, v in resources.items() if k.startswith(prefix)]
    assert len(found) == 1, f"{prefix}: {[k for k, _ in found]}"
    return found[0]


def joined(value: Any) -> str:
    """A Fn::Join rendered with its tokens as JSON (enough to search a dashboard body or a URL)."""
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(p if isinstance(p, str) else json.dumps(p) for p in parts)
    return value if isinstance(value, str) else json.dumps(value)


def with_markers(manifest: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Parse a KubernetesManifest's Manifest property; every CloudFormation token in it becomes `@@<n>@@`."""
    if isinstance(manifest, str):
        return json.loads(manifest), []
    sep, parts = manifest["Fn::Join"]
    tokens: list[Any] = []
    text = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        else:
            text.append(f"@@{len(tokens)}@@")
            tokens.append(part)
    return json.loads(sep.join(text)), tokens


def app_config(synth: Synth) -> dict[str, Any]:
    """Data of the API/UI ConfigMap `flywheel-config` as deployed; a value that is one token is that token."""
    _, resource = only(synth.resources("Custom::AWSCDK-EKS-KubernetesResource"), "ServingClustermanifestApp")
    docs, tokens = with_markers(resource["Properties"]["Manifest"])
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "flywheel-config"]
    whole = re.compile(r"@@(\d+)@@")
    return {
        key: tokens[int(match.group(1))] if (match := whole.fullmatch(value)) else value
        for key, value in config["data"].items()
    }


def trainer_environment(synth: Synth) -> dict[str, Any]:
    """Environment variables of the trainer Lambda in the template."""
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    return dict(function["Properties"]["Environment"]["Variables"])


def role_statements(synth: Synth, role_prefix: str) -> list[dict[str, Any]]:
    """Every statement of every policy attached to the one role whose logical id starts with `role_prefix`."""
    role_id, _ = only(synth.resources("AWS::IAM::Role"), role_prefix)
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def actions(statement: dict[str, Any]) -> list[str]:
    """A statement's actions as a list (IAM allows a single string)."""
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resource_text(resource: Any) -> str:
    return joined(resource).replace(json.dumps({"Fn::GetAtt": ["DataBucketE6B0FAA8", "Arn"]}), "BUCKET")


def s3_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(action, resource, s3:prefix condition) for every S3 permission, with the bucket ARN written BUCKET."""
    out = set()
    for s in statements:
        for action in actions(s):
            if action.startswith("s3:"):
                assert s["Effect"] == "Allow"
                prefixes = s.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])
                out.add((action, _resource_text(s["Resource"]), ",".join(prefixes)))
    return out


def offline_env(tmp: Path) -> dict[str, str]:
    """An environment with no AWS credentials, no config, no metadata service, no telemetry or update checks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_CLI_TELEMETRY="true",
        CDK_DISABLE_VERSION_CHECK="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
    )
    return env


def synth_with(tmp: Path, context: dict[str, str]) -> InProcessSynth:
    """The app synthesized in this process with cdk.json's context plus `context` (cdk-nag included: an
    unacknowledged finding raises)."""
    from aws_cdk import App

    from cdk.app import build_app

    app, stack = build_app(App(outdir=str(tmp), context={**cdk_json_context(), **context}))
    app.synth()
    template = json.loads((tmp / f"{stack.stack_name}.template.json").read_text())
    return InProcessSynth(outdir=tmp, template=template, stack=stack)
