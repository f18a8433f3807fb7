"""The MLflow mirror's settings from CDK context: off by default, https servers on the internet only, credentials
by secret ARN, SageMaker by tracking server ARN, and the FLYWHEEL_MLFLOW_* settings as the core reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cdk_fixtures import REPO_ROOT, cdk_json_context

from cdk.context import SettingsError, context_key
from cdk.mlflow_settings import JUDGE_TIMEOUT_SECONDS, MlflowSettings

URI = "https://mlflow.example.com"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mlflow/flywheel-AbC123"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SERVER = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/flywheel"
STORE = "s3://ml-artifacts-123456789012/flywheel"


def test_off_by_default_with_nothing_to_set():
    settings = MlflowSettings.from_mapping({})
    assert not settings.enabled
    assert settings.environment == {}


def test_a_server_at_a_url_with_credentials_from_a_secret():
    settings = MlflowSettings.from_mapping(
        {
            "mlflow_tracking_uri": URI + "/mlflow/",  # a server behind a path prefix
            "mlflow_credentials_secret_arn": SECRET,
            "mlflow_credentials_secret_key_arn": KEY,
            "mlflow_experiment": "flywheel/{model}",
            "mlflow_registered_prefix": "fw-",
            "mlflow_timeout_seconds": "4",  # strings, as `-c key=value` gives them
            "mlflow_budget_seconds": "20.5",
        }
    )
    assert settings.enabled and not settings.sagemaker
    assert settings.environment == {
        "MLFLOW_TRACKING_URI": URI + "/mlflow/",
        "FLYWHEEL_MLFLOW_EXPERIMENT": "flywheel/{model}",
        "FLYWHEEL_MLFLOW_REGISTERED_PREFIX": "fw-",
        "FLYWHEEL_MLFLOW_TIMEOUT_SECONDS": "4",
        "FLYWHEEL_MLFLOW_BUDGET_SECONDS": "20.5",
        "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID": SECRET,  # the ARN; the value is read when the mirror runs
    }


def test_sagemakers_managed_mlflow_is_its_tracking_server_arn():
    settings = MlflowSettings.from_mapping({"mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": STORE})
    assert settings.sagemaker
    env = settings.environment
    assert env["MLFLOW_TRACKING_URI"] == SERVER  # the sagemaker-mlflow plugin's URI: it signs with the role
    assert "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID" not in env
    assert settings.artifact_store == ("ml-artifacts-123456789012", "flywheel")
    assert MlflowSettings.from_mapping(
        {"mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": "s3://ml-artifacts/"}
    ).artifact_store == ("ml-artifacts", "")


def test_the_defaults_are_the_cores():
    """FLYWHEEL_MLFLOW_* as flywheel.tracking reads them: same names, same defaults, and the stack's bounds
    within the core's (pydantic's gt/le)."""
    from flywheel.tracking.mlflow_client import MirrorSettings

    core = MirrorSettings.model_fields
    env = MlflowSettings(mlflow_tracking_uri=URI).environment
    for name, value in env.items():
        if name.startswith("FLYWHEEL_MLFLOW_") and name != "FLYWHEEL_MLFLOW_CREDENTIALS_SECRET_ID":
            field = name.removeprefix("FLYWHEEL_MLFLOW_").lower()
            assert field in core, name
            default = core[field].default
            assert value == (f"{default:g}" if isinstance(default, float) else default), name
    bounds = {f: {type(m).__name__: m for m in core[f].metadata} for f in ("timeout_seconds", "budget_seconds")}
    assert (bounds["timeout_seconds"]["Gt"].gt, bounds["timeout_seconds"]["Le"].le) == (0, 60)
    assert (bounds["budget_seconds"]["Gt"].gt, bounds["budget_seconds"]["Le"].le) == (0, 600)


def test_the_core_reads_the_credentials_secret():
    from flywheel.tracking.mlflow_client import MirrorSettings

    assert "credentials_secret_id" in MirrorSettings.model_fields


def test_the_judge_timeout_is_the_judges():
    from cdk.rollout_judge import TIMEOUT

    assert TIMEOUT.to_seconds() == JUDGE_TIMEOUT_SECONDS


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("http://mlflow.example.com", "expected an https:// URL"),
        ("http://10.0.3.7:5000", "expected an https:// URL"),
        ("databricks", "expected an https:// URL"),
        ("file:///tmp/mlruns", "expected an https:// URL"),
        ("mlflow.example.com", "expected an https:// URL"),
        ("https://user:pass@mlflow.example.com", "credentials in the URL"),
        ("https://token@mlflow.example.com", "credentials in the URL"),
        ("https://mlflow.example.com/?x=1", "no query or fragment"),
        ("https://mlflow.example.com/#runs", "no query or fragment"),
        ("https://10.0.3.7", "private, loopback or link-local"),
        ("https://127.0.0.1:5000", "private, loopback or link-local"),
        ("https://169.254.169.254", "private, loopback or link-local"),  # the instance metadata service
        ("https://[fd00::1]", "private, loopback or link-local"),
        ("https://localhost:5000", "public DNS name"),
        ("https://mlflow", "public DNS name"),
        ("https://mlflow.mlflow.svc.cluster.local", "public DNS name"),
        ("https://mlflow.corp.internal", "public DNS name"),
        ("https://mlflow.example.com:99999", "not a URL"),
        ("https://", "host name"),
        (SERVER, "set mlflowTrackingServerArn instead"),
    ],
)
def test_tracking_uris_that_cannot_or_must_not_be_used_are_refused(uri: str, why: str):
    with pytest.raises(SettingsError, match=rf"context 'mlflowTrackingUri' = .*: .*{why}"):
        MlflowSettings.from_mapping({"mlflow_tracking_uri": uri})


@pytest.mark.parametrize(
    "uri", ["https://mlflow.example.com", "https://MLflow.Example.com:8443/api/", "https://52.94.236.248"]
)
def test_https_uris_of_internet_hosts_are_accepted(uri: str):
    assert MlflowSettings.from_mapping({"mlflow_tracking_uri": uri}).enabled


@pytest.mark.parametrize(
    ("values", "key"),
    [
        (
            {"mlflow_tracking_uri": URI, "mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": STORE},
            "mlflowTrackingServerArn",
        ),
        (
            {"mlflow_tracking_server_arn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/x"},
            "mlflowTrackingServerArn",
        ),
        ({"mlflow_tracking_server_arn": SERVER}, "mlflowArtifactStoreUri"),  # where the client writes artifacts
        (
            {"mlflow_tracking_server_arn": SERVER, "mlflow_artifact_store_uri": "s3://bucket/*"},
            "mlflowArtifactStoreUri",
        ),
        (
            {
                "mlflow_tracking_server_arn": SERVER,
                "mlflow_artifact_store_uri": STORE,
                "mlflow_credentials_secret_arn": SECRET,
            },
            "mlflowCredentialsSecretArn",
        ),
        ({"mlflow_tracking_uri": URI, "mlflow_artifact_store_uri": STORE}, "mlflowArtifactStoreUri"),
        (
            {"mlflow_tracking_uri": URI, "mlflow_credentials_secret_arn": "mlflow/flywheel"},
            "mlflowCredentialsSecretArn",
        ),
        ({"mlflow_tracking_uri": URI, "mlflow_credentials_secret_key_arn": KEY}, "mlflowCredentialsSecretKeyArn"),
        ({"mlflow_tracking_uri": URI, "mlflow_experiment": ""}, "mlflowExperiment"),
        ({"mlflow_tracking_uri": URI, "mlflow_experiment": "{name}"}, "mlflowExperiment"),  # a misspelt placeholder
        ({"mlflow_tracking_uri": URI, "mlflow_registered_prefix": "team/"}, "mlflowRegisteredPrefix"),
        ({"mlflow_tracking_uri": URI, "mlflow_registered_prefix": "it's-"}, "mlflowRegisteredPrefix"),
        ({"mlflow_tracking_uri": URI, "mlflow_timeout_seconds": "0"}, "mlflowTimeoutSeconds"),
        ({"mlflow_tracking_uri": URI, "mlflow_timeout_seconds": "61"}, "mlflowTimeoutSeconds"),
        ({"mlflow_tracking_uri": URI, "mlflow_timeout_seconds": "soon"}, "mlflowTimeoutSeconds"),
        ({"mlflow_tracking_uri": URI, "mlflow_budget_seconds": "601"}, "mlflowBudgetSeconds"),
        # a pass after a judge decision may last budget + one request: it must end within the judge's 60 s
        (
            {"mlflow_tracking_uri": URI, "mlflow_budget_seconds": "55", "mlflow_timeout_seconds": "5"},
            "mlflowBudgetSeconds",
        ),
        # a setting that would do nothing: the server was meant to be set too
        ({"mlflow_credentials_secret_arn": SECRET}, "mlflowCredentialsSecretArn"),
        ({"mlflow_experiment": "flywheel"}, "mlflowExperiment"),
        ({"mlflow_budget_seconds": 10}, "mlflowBudgetSeconds"),
    ],
)
def test_bad_or_inconsistent_values_name_the_context_key(values: dict[str, object], key: str):
    with pytest.raises(SettingsError, match=rf"context '{key}'"):
        MlflowSettings.from_mapping(values)


def test_unknown_keys_fail():
    with pytest.raises(SettingsError, match="unknown"):
        MlflowSettings.from_mapping({"mlflow_uri": URI})


def test_every_setting_is_documented():
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for field in dataclasses.fields(MlflowSettings):
        assert f"`{context_key(field.name)}`" in doc, f"{context_key(field.name)} missing from docs/deploy.md"
    settings_doc = (REPO_ROOT / "docs" / "settings.md").read_text()
    for name in MlflowSettings(mlflow_tracking_uri=URI, mlflow_credentials_secret_arn=SECRET).environment:
        assert f"`{name}`" in settings_doc, f"{name} missing from docs/settings.md"


def test_the_synth_fails_on_a_plain_http_tracking_uri(tmp_path: Path):
    """`cdk synth -c mlflowTrackingUri=http://...` stops before building anything, naming the key and why."""
    from aws_cdk import App

    from cdk.app import build_app

    app = App(outdir=str(tmp_path), context={**cdk_json_context(), "mlflowTrackingUri": "http://mlflow.example.com"})
    with pytest.raises(
        SettingsError, match=r"'mlflowTrackingUri' = 'http://mlflow\.example\.com': expected an https://"
    ):
        build_app(app)
