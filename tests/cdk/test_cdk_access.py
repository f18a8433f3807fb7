"""Access control in the synthesized stack: identity provider, secrets and who reads them, the pods' ConfigMap,
the exposed Services and the outputs; for the default (internal), a Cognito and an external-issuer deployment."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cdk_fixtures import (
    InProcessSynth,
    actions,
    app_config,
    joined,
    only,
    role_statements,
    s3_grants,
    synth_with,
    with_markers,
)
from test_cdk_bucket_policy import (
    HISTORY_KEY_OF_V7,
    VERSION_FILE_KEYS_OF_V7,
    assert_history_writers,
    denied,
    role_arn,
)

from cdk.access import UI_ROLLOUT_KEYS
from cdk.access_settings import COGNITO_ROLE_CLAIM
from cdk.data_bucket import VERSION_WRITE_ACTIONS
from cdk.exposure import INTERNAL, SSL_CERT, SSL_PORTS
from cdk.identity import OPERATOR_GROUP, VIEWER_GROUP

CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/0b3d1c2e-1111-2222-3333-444455556666"
IDP_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:idp/flywheel-AbC123"
IDP_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
COGNITO_CONTEXT = {"uiDomain": "ui.example.com", "certificateArn": CERT, "allowedCidrs": "203.0.113.0/24"}
EXTERNAL_CONTEXT = {
    "uiDomain": "flywheel.example.org",
    "apiDomain": "api.flywheel.example.org",
    "certificateArn": CERT,
    "oidcConfigSecretArn": IDP_SECRET,
    "oidcConfigSecretKeyArn": IDP_KEY,
    "oidcRoleClaim": "groups",
}


@pytest.fixture(scope="module")
def cognito(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    return synth_with(tmp_path_factory.mktemp("cdk-cognito"), COGNITO_CONTEXT)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> InProcessSynth:
    return synth_with(tmp_path_factory.mktemp("cdk-external-idp"), EXTERNAL_CONTEXT)


def _secret_ids(synth: InProcessSynth) -> dict[str, str]:
    """Short name (the construct id: Store, UiKey, OidcConfig, CookieSecret) -> logical id of each stack secret."""
    out = {}
    for logical_id in synth.resources("AWS::SecretsManager::Secret"):
        for name in ("Store", "UiKey", "OidcConfig", "CookieSecret"):
            if logical_id.startswith(("AccessApiKeys" + name, "AccessIdentity" + name)):
                out[name] = logical_id
    return out


def _reads(synth: InProcessSynth, role_prefix: str) -> set[str]:
    """Every secret a role may read (GetSecretValue), as a short name or the literal ARN."""
    names = {logical_id: name for name, logical_id in _secret_ids(synth).items()}
    out = set()
    for statement in role_statements(synth, role_prefix):
        if any(a.startswith("secretsmanager:") for a in actions(statement)):
            assert actions(statement) == ["secretsmanager:GetSecretValue"], statement
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            out |= {names[r["Ref"]] if isinstance(r, dict) else r for r in resources}
    return out


def _services(synth: InProcessSynth) -> dict[str, dict[str, Any]]:
    _, resource = only(synth.resources("Custom::AWSCDK-EKS-KubernetesResource"), "ServingClustermanifestApp")
    docs, _ = with_markers(resource["Properties"]["Manifest"])
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}


def _outputs(synth: InProcessSynth) -> dict[str, str]:
    return {name: joined(output["Value"]) for name, output in synth.template["Outputs"].items()}


# The default deployment: internal load balancers, viewer-only UI, API keys


def test_default_creates_no_user_pool_and_internal_load_balancers(synth: InProcessSynth):
    assert synth.resources("AWS::Cognito::UserPool") == {}
    assert set(_secret_ids(synth)) == {"Store", "UiKey"}
    for name in ("flywheel-api", "flywheel-ui"):
        assert _services(synth)[name]["metadata"]["annotations"][INTERNAL] == "true"
    outputs = _outputs(synth)
    assert outputs["UiAccess"].startswith("UI: internal only, viewer-only")
    assert "set uiDomain+certificateArn for HTTPS with OIDC sign-in, or allowedCidrs" in outputs["UiAccess"]
    assert outputs["ApiAccess"].startswith("API: internal only")


def test_default_config_map_is_viewer_only_with_api_keys(synth: InProcessSynth):
    config, ids = app_config(synth), _secret_ids(synth)
    assert config["FLYWHEEL_UI_AUTH"] == "viewer-only"
    assert config["FLYWHEEL_UI_OIDC_SECRET_ID"] == config["FLYWHEEL_UI_COOKIE_SECRET_ID"] == ""
    assert config["FLYWHEEL_UI_ROLE_CLAIM"] == ""
    assert config["FLYWHEEL_API_AUTH"] == "api-keys"
    assert config["FLYWHEEL_API_KEYS_SECRET_ID"] == {"Ref": ids["Store"]}
    assert config["FLYWHEEL_API_SERVICE_KEY_SECRET_IDS"] == {"Ref": ids["UiKey"]}
    assert config["FLYWHEEL_API_KEY_SECRET_ID"] == {"Ref": ids["UiKey"]}


def test_api_keys_secrets(synth: InProcessSynth):
    ids = _secret_ids(synth)
    store = synth.template["Resources"][ids["Store"]]
    assert json.loads(store["Properties"]["SecretString"]) == {"keys": []}
    assert store["DeletionPolicy"] == "Retain"  # retainData: losing it locks every client out
    generated = synth.template["Resources"][ids["UiKey"]]["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 48
    assert generated["ExcludePunctuation"] is True
    assert "SecretStringTemplate" not in generated  # a plain string, not JSON
    outputs = synth.template["Outputs"]
    assert outputs["ApiKeysSecretArn"]["Value"] == {"Ref": ids["Store"]}
    assert "PutSecretValue" in outputs["ApiKeysSecretArn"]["Description"]


def test_default_grants_api_reads_keys_and_ui_key_ui_reads_its_key_only(synth: InProcessSynth):
    assert _reads(synth, "ServingAppPodRole") == {"Store", "UiKey"}
    assert _reads(synth, "ServingUiPodRole") == {"UiKey"}


def test_default_ui_is_viewer_only_so_its_role_writes_nothing(synth: InProcessSynth):
    """No PutObject (nor any other write) at all: not the upload, the alias, the rollout state or history."""
    grants = s3_grants(role_statements(synth, "ServingUiPodRole"))
    assert {a for a, _, _ in grants} == {"s3:GetObject", "s3:ListBucket"}
    ui = role_arn(synth, "ServingUiPodRole")
    for key in [*VERSION_FILE_KEYS_OF_V7, HISTORY_KEY_OF_V7]:  # and the bucket policy lets nothing through
        assert denied(synth, ui, "s3:PutObject", key)


# Cognito: uiDomain + certificateArn (and allowedCidrs)


def test_cognito_user_pool_is_closed_and_strong(cognito: InProcessSynth):
    pool_id, pool = only(cognito.resources("AWS::Cognito::UserPool"), "AccessIdentityUserPool")
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True  # no self sign-up
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    assert all(policy[k] for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert props["MfaConfiguration"] == "ON"
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]  # TOTP, no SMS
    assert props["UserPoolTier"] == "PLUS"
    assert props["UserPoolAddOns"] == {"AdvancedSecurityMode": "ENFORCED"}
    assert props["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"
    groups = {g["Properties"]["GroupName"] for g in cognito.resources("AWS::Cognito::UserPoolGroup").values()}
    assert groups == {OPERATOR_GROUP, VIEWER_GROUP}
    (domain,) = cognito.resources("AWS::Cognito::UserPoolDomain").values()
    assert domain["Properties"]["UserPoolId"] == {"Ref": pool_id}
    assert "Flywheel-dev".lower() in joined(domain["Properties"]["Domain"])


def test_cognito_app_client_uses_the_code_flow_with_a_secret(cognito: InProcessSynth):
    (client,) = cognito.resources("AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert props["GenerateSecret"] is True
    assert props["AllowedOAuthFlows"] == ["code"]
    assert props["AllowedOAuthFlowsUserPoolClient"] is True
    assert sorted(props["AllowedOAuthScopes"]) == ["email", "openid", "profile"]
    assert props["CallbackURLs"] == ["https://ui.example.com/oauth2callback"]  # Streamlit's native OIDC path
    assert props["SupportedIdentityProviders"] == ["COGNITO"]


def test_oidc_client_settings_and_cookie_secrets(cognito: InProcessSynth):
    ids = _secret_ids(cognito)
    assert set(ids) == {"Store", "UiKey", "OidcConfig", "CookieSecret"}
    text = joined(cognito.template["Resources"][ids["OidcConfig"]]["Properties"]["SecretString"])
    pool_id, _ = only(cognito.resources("AWS::Cognito::UserPool"), "AccessIdentityUserPool")
    for part in (
        '{"client_id":"{"Ref": "AccessIdentityUserPoolUiClient',
        '"client_secret":"{"Fn::GetAtt": ["AccessIdentityUserPoolUiClientDescribeCognitoUserPoolClient',
        '"UserPoolClient.ClientSecret"]}"',
        '"server_metadata_url":"https://cognito-idp.{"Ref": "AWS::Region"}.amazonaws.com/'
        f'{{"Ref": "{pool_id}"}}/.well-known/openid-configuration"',
        '"redirect_uri":"https://ui.example.com/oauth2callback"}',
    ):
        assert part in text
    cookie = cognito.template["Resources"][ids["CookieSecret"]]["Properties"]["GenerateSecretString"]
    assert cookie["PasswordLength"] >= 32
    assert "SecretStringTemplate" not in cookie


def test_cognito_grants_each_role_exactly_its_secrets(cognito: InProcessSynth):
    assert _reads(cognito, "ServingAppPodRole") == {"Store", "UiKey"}
    assert _reads(cognito, "ServingUiPodRole") == {"UiKey", "OidcConfig", "CookieSecret"}
    ui_actions = {a for s in role_statements(cognito, "ServingUiPodRole") for a in actions(s)}
    assert not any(a.startswith("kms:") for a in ui_actions)  # AWS-managed key: nothing to grant


@pytest.mark.parametrize("variant", ["cognito", "external"])
def test_with_sign_in_the_ui_may_upload_move_aliases_and_decide_rollouts_and_nothing_else(
    variant: str, request: pytest.FixtureRequest
):
    synth: InProcessSynth = request.getfixturevalue(variant)
    writes = {(a, r) for a, r, _ in s3_grants(role_statements(synth, "ServingUiPodRole")) if a != "s3:GetObject"} - {
        ("s3:ListBucket", "BUCKET")
    }
    assert UI_ROLLOUT_KEYS == ("models/*/rollout.json", "models/*/versions/*/history/*")
    assert writes == {
        ("s3:PutObject", "BUCKET/data/*"),  # upload (an operator, checked by the UI)
        ("s3:PutObject", "BUCKET/models/*/aliases/production.json"),  # promote / roll back: no version, no schema
        ("s3:PutObject", "BUCKET/models/*/rollout.json"),  # promote / abort a rollout (compare-and-swap)
        ("s3:PutObject", "BUCKET/models/*/versions/*/history/*"),  # the decision on the candidate (create-only)
    }


def test_with_sign_in_the_bucket_policy_lets_the_ui_add_history_and_nothing_else_under_versions(
    cognito: InProcessSynth,
):
    """The UI's role joins the judge's as a history writer: no delete, no version file, whatever IAM allows."""
    judge, ui = role_arn(cognito, "RolloutJudgeRole"), role_arn(cognito, "ServingUiPodRole")
    assert_history_writers(cognito, [judge, ui])
    app = role_arn(cognito, "ServingAppPodRole")  # still held out of versions/ entirely
    for key in [*VERSION_FILE_KEYS_OF_V7, HISTORY_KEY_OF_V7]:
        for action in VERSION_WRITE_ACTIONS:
            assert denied(cognito, app, action, key)


def test_cognito_config_map_is_oidc(cognito: InProcessSynth):
    config, ids = app_config(cognito), _secret_ids(cognito)
    assert config["FLYWHEEL_UI_AUTH"] == "oidc"
    assert config["FLYWHEEL_UI_OIDC_SECRET_ID"] == {"Ref": ids["OidcConfig"]}
    assert config["FLYWHEEL_UI_COOKIE_SECRET_ID"] == {"Ref": ids["CookieSecret"]}
    assert config["FLYWHEEL_UI_ROLE_CLAIM"] == COGNITO_ROLE_CLAIM
    assert config["FLYWHEEL_API_AUTH"] == "api-keys"


def test_services_get_tls_listeners_with_the_certificate_for_the_allowed_cidrs(cognito: InProcessSynth):
    services = _services(cognito)
    for name in ("flywheel-api", "flywheel-ui"):
        service = services[name]
        annotations = service["metadata"]["annotations"]
        assert annotations[SSL_CERT] == CERT
        assert "443" in annotations[SSL_PORTS].split(",")
        assert INTERNAL not in annotations
        assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
        assert 443 in [p["port"] for p in service["spec"]["ports"]]


def test_cognito_outputs_say_https_and_sign_in(cognito: InProcessSynth):
    outputs = _outputs(cognito)
    assert outputs["UiUrl"] == "https://ui.example.com"
    assert outputs["UiAccess"].startswith("UI: https://ui.example.com (OIDC sign-in, TLS; only from 203.0.113.0/24)")
    assert "set apiDomain" in outputs["ApiAccess"]  # the certificate does not name the NLB's host
    assert {"UserPoolId", "SignInDomain", "UiOidcSecretArn"} <= set(outputs)


# An external OIDC issuer: oidcConfigSecretArn


def test_external_issuer_creates_no_user_pool(external: InProcessSynth):
    assert external.resources("AWS::Cognito::UserPool") == {}
    assert external.resources("AWS::Cognito::UserPoolClient") == {}
    assert set(_secret_ids(external)) == {"Store", "UiKey", "CookieSecret"}
    config = app_config(external)
    assert config["FLYWHEEL_UI_AUTH"] == "oidc"
    assert config["FLYWHEEL_UI_OIDC_SECRET_ID"] == IDP_SECRET
    assert config["FLYWHEEL_UI_ROLE_CLAIM"] == "groups"  # oidcRoleClaim
    assert "UserPoolId" not in external.template["Outputs"]


def test_external_issuer_secret_and_its_key_are_readable_by_the_ui_only(external: InProcessSynth):
    assert _reads(external, "ServingUiPodRole") == {"UiKey", IDP_SECRET, "CookieSecret"}
    assert _reads(external, "ServingAppPodRole") == {"Store", "UiKey"}
    (decrypt,) = [s for s in role_statements(external, "ServingUiPodRole") if "kms:Decrypt" in actions(s)]
    assert decrypt["Resource"] == IDP_KEY
    assert joined(decrypt["Condition"]["StringEquals"]["kms:ViaService"]).startswith("secretsmanager.")
    app_actions = {a for s in role_statements(external, "ServingAppPodRole") for a in actions(s)}
    assert "kms:Decrypt" not in app_actions


def test_api_domain_names_the_api_url(external: InProcessSynth):
    outputs = _outputs(external)
    assert outputs["ApiUrl"] == "https://api.flywheel.example.org"
    assert outputs["UiUrl"] == "https://flywheel.example.org"
    assert "loadBalancerSourceRanges" not in _services(external)["flywheel-ui"]["spec"]


def test_api_pods_read_models_and_write_only_their_statistics_and_captures(synth: InProcessSynth):
    grants = {(a, r) for a, r, _ in s3_grants(role_statements(synth, "ServingAppPodRole"))}
    assert {g for g in grants if g[0] != "s3:GetObject" and g[0] != "s3:ListBucket"} == {
        # flywheel/release/rollout_stats.py, one object per process
        ("s3:PutObject", "BUCKET/models/*/rollouts/*/stats/*"),
        ("s3:PutObject", "BUCKET/captures/*"),  # captured predictions (docs/captures.md)
    }
    assert ("s3:GetObject", "BUCKET/models/*") in grants
    api = role_arn(synth, "ServingAppPodRole")
    for key in [*VERSION_FILE_KEYS_OF_V7, HISTORY_KEY_OF_V7]:
        assert denied(synth, api, "s3:PutObject", key)
