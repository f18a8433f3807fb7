"""Model registrations at deploy: one create-only `models/<name>/schema.json` per model of the `models` context
value, written by a custom resource that may put exactly those keys; a bad value fails the synth naming it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from cdk_fixtures import (
    REPO_ROOT,
    InProcessSynth,
    actions,
    cdk_json_context,
    joined,
    only,
    role_statements,
    s3_grants,
    with_markers,
)

from cdk.app import build_app
from cdk.registrations import MODEL_NAME, RESOURCE_TYPE, RegistrationError, resolve, schema_key
from cdk.settings import SettingsError

#: The singleton function behind every AwsCustomResource of a stack (its id is fixed by aws-cdk-lib).
PROVIDER_ROLE = "AWS679f53fac002430cb0da5b7982bd2287ServiceRole"
PROD_MODELS = {
    "churn": "flywheel/schemas/churn.json",
    "savings": "flywheel/schemas/savings.json",
    "churn-eu": "flywheel/schemas/churn.json",
}


def registration_calls(synth: InProcessSynth) -> dict[str, dict[str, Any]]:
    """Key -> the S3 call of every registration; each is create-only on create and update, kept on delete."""
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    calls = {}
    for logical_id, resource in synth.resources(RESOURCE_TYPE).items():
        call, tokens = with_markers(resource["Properties"]["Create"])
        assert tokens == [{"Ref": bucket_id}] and call["parameters"]["Bucket"] == "@@0@@", logical_id
        assert with_markers(resource["Properties"]["Update"])[0] == call, "an update is the same create-only put"
        assert "Delete" not in resource["Properties"], "a registration is never deleted"
        assert resource["DeletionPolicy"] == "Retain"
        calls[call["parameters"]["Key"]] = call
    return calls


def schema_file(path: str) -> Any:
    return json.loads((REPO_ROOT / path).read_text())


def test_by_default_the_default_model_is_registered(synth: InProcessSynth):
    calls = registration_calls(synth)
    assert list(calls) == ["models/savings/schema.json"]  # modelName=schema
    assert json.loads(calls["models/savings/schema.json"]["parameters"]["Body"]) == schema_file(
        "flywheel/schemas/savings.json"
    )


def test_each_context_model_gets_one_create_only_put_of_its_schema_file(prod: InProcessSynth):
    calls = registration_calls(prod)
    assert set(calls) == {f"models/{name}/schema.json" for name in PROD_MODELS}
    for name, path in PROD_MODELS.items():
        key = f"models/{name}/schema.json"
        call = calls[key]
        assert (call["service"], call["action"]) == ("S3", "putObject")
        assert call["physicalResourceId"] == {"id": key}
        params = call["parameters"]
        assert params["IfNoneMatch"] == "*"
        assert params["ContentType"] == "application/json"
        assert json.loads(params["Body"]) == schema_file(path)
        # Only "already registered" is ignored; access denied, a missing bucket or a write race fail the deploy.
        ignored = re.compile(call["ignoreErrorCodesMatching"])
        assert ignored.search("PreconditionFailed")
        for code in ("AccessDenied", "NoSuchBucket", "ConditionalRequestConflict", "PreconditionFailedX"):
            assert not ignored.search(code), code


def test_registrations_may_put_exactly_their_keys(prod: InProcessSynth):
    statements = role_statements(prod, PROVIDER_ROLE)
    assert s3_grants(statements) == {("s3:PutObject", f"BUCKET/models/{name}/schema.json", "") for name in PROD_MODELS}
    assert {a for s in statements for a in actions(s)} == {"s3:PutObject"}
    _, role = only(prod.resources("AWS::IAM::Role"), PROVIDER_ROLE)
    (managed,) = role["Properties"]["ManagedPolicyArns"]
    assert joined(managed).endswith(":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")  # its logs only
    # Each registration waits for its own policy, which names its key and no other.
    policies = prod.resources("AWS::IAM::Policy")
    for logical_id, resource in prod.resources(RESOURCE_TYPE).items():
        key = with_markers(resource["Properties"]["Create"])[0]["parameters"]["Key"]
        (policy_id,) = [d for d in resource["DependsOn"] if d in policies]
        (statement,) = policies[policy_id]["Properties"]["PolicyDocument"]["Statement"]
        assert joined(statement["Resource"]).endswith(f'"Arn"]}}/{key}'), logical_id


def test_the_provider_logs_to_a_log_group_with_retention(prod: InProcessSynth):
    log_group_id, log_group = only(prod.resources("AWS::Logs::LogGroup"), "ModelsLogs")
    assert log_group["Properties"]["RetentionInDays"] == 30
    _, function = only(prod.resources("AWS::Lambda::Function"), "AWS679f53fac002430cb0da5b7982bd2287")
    assert function["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}


@pytest.mark.parametrize(
    ("models", "error", "message"),
    [
        ("Churn=churn", SettingsError, r"context 'models'.*\^\[a-z0-9\]"),
        ("churn_eu=churn", SettingsError, r"context 'models'.*\^\[a-z0-9\]"),
        (f"{'a' * 64}=churn", SettingsError, r"context 'models'.*\^\[a-z0-9\]"),
        ("churn", SettingsError, r"context 'models'.*'churn' is not name=schema"),
        ("churn=churn,churn=savings", SettingsError, r"context 'models'.*'churn' is listed twice"),
        ("savings=churn", SettingsError, r"context 'models'.*default model 'savings'"),  # modelName's, not schema's
        ("churn=no-such-schema", RegistrationError, r"context 'models': model 'churn'.*no such schema"),
        ("churn=flywheel/schemas/nope.json", RegistrationError, r"context 'models': model 'churn'.*no such schema"),
        ("churn=docs/deploy.md", RegistrationError, r"context 'models': model 'churn'.*is not JSON"),
        ("churn=cdk.json", RegistrationError, r"context 'models': model 'churn'.*needs name \(str\), task"),
    ],
)
def test_a_bad_models_value_fails_the_synth_naming_the_key(
    models: str, error: type[Exception], message: str, tmp_path: Path
):
    with pytest.raises(error, match=message):
        build_app(App(outdir=str(tmp_path), context={**cdk_json_context(), "models": models}))


def test_a_schema_outside_the_repository_is_refused(tmp_path: Path):
    outside = tmp_path / "churn.json"
    outside.write_text((REPO_ROOT / "flywheel" / "schemas" / "churn.json").read_text())
    with pytest.raises(RegistrationError, match="no such schema"):
        resolve([("churn", str(outside))], repo_root=REPO_ROOT)
    with pytest.raises(RegistrationError, match="no such schema"):
        resolve([("churn", os.path.relpath(outside, REPO_ROOT))], repo_root=REPO_ROOT)  # ../../tmp/...


def test_keys_names_and_bodies_agree_with_the_core():
    """What the stack writes is what the core reads: the key, the name rule, and a body its Schema accepts."""
    from flywheel.registry import registrations as core
    from flywheel.schema import BUILTIN_SCHEMAS, Schema, load_schema
    from flywheel.settings import MODEL_NAME as CORE_NAME

    assert CORE_NAME.pattern == f"^{MODEL_NAME.pattern}$"
    for name in ("savings", "churn-2"):
        assert schema_key(name) == core.schema_key("models/", name)
    for ref in BUILTIN_SCHEMAS:
        (registration,) = resolve([(f"m-{ref}", ref)], repo_root=REPO_ROOT)
        assert Schema.model_validate(json.loads(registration.body)) == load_schema(ref)


def test_the_cdk_app_does_not_import_the_core():
    code = "import sys, cdk.app; sys.exit(any(m.split('.')[0] == 'flywheel' for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
