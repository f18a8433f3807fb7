"""Exposure settings and the Service patching on the real rendered eks overlay: no synth, fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from cdk_fixtures import REPO_ROOT, cdk_json_context, joined

from cdk.access_settings import AccessSettings, Exposure
from cdk.exposure import (
    BACKEND_PROTOCOL,
    INTERNAL,
    SCHEME,
    SSL_CERT,
    SSL_POLICY,
    SSL_PORTS,
    TLS_POLICY,
    endpoint_outputs,
    expose,
)
from cdk.manifests import Manifest, ManifestError, render_overlay
from cdk.settings import SettingsError

CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/0b3d1c2e-1111-2222-3333-444455556666"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:idp/flywheel-AbC123"


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> list[Manifest]:
    return render_overlay(REPO_ROOT / "k8s" / "overlays" / "eks")


def _service(docs: list[Manifest], name: str) -> dict[str, Any]:
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    return service


def test_default_is_internal_and_viewer_only():
    settings = AccessSettings.from_mapping({})
    assert settings.exposure is Exposure.INTERNAL
    assert not settings.creates_user_pool


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/0,10.0.0.0/8", "0.0.0.0/1,128.0.0.0/1", "::/1"])
def test_the_whole_internet_is_refused(cidr: str):
    with pytest.raises(SettingsError, match=r"allowedCidrs.*whole internet"):
        AccessSettings.from_mapping({"allowed_cidrs": cidr})


def test_the_synth_fails_on_an_open_cidr(tmp_path: Path):
    """`cdk synth -c allowedCidrs=0.0.0.0/0` stops before building anything, naming the key."""
    from cdk.app import build_app

    app = App(outdir=str(tmp_path), context={**cdk_json_context(), "allowedCidrs": "0.0.0.0/0"})
    with pytest.raises(SettingsError, match=r"'allowedCidrs': '0\.0\.0\.0/0' opens the load balancers"):
        build_app(app)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"allowed_cidrs": "10.0.0.1/8"}, "allowedCidrs"),  # host bits set: not a network
        ({"allowed_cidrs": "office"}, "allowedCidrs"),
        ({"ui_domain": "ui.example.com"}, "certificateArn"),  # a domain needs its certificate
        ({"certificate_arn": CERT}, "uiDomain"),  # and a certificate a domain
        ({"certificate_arn": "arn:aws:iam::123456789012:role/x", "ui_domain": "ui.example.com"}, "certificateArn"),
        ({"api_domain": "api.example.com"}, "apiDomain"),  # no TLS, no name
        ({"oidc_config_secret_arn": SECRET}, "oidcConfigSecretArn"),  # OIDC needs HTTPS
        (
            {"ui_domain": "ui.example.com", "certificate_arn": CERT, "oidc_config_secret_arn": "idp"},
            "oidcConfigSecretArn",
        ),
        ({"oidc_config_secret_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/k"}, "oidcConfigSecretKeyArn"),
        ({"cognito_domain_prefix": "my-aws-login"}, "cognitoDomainPrefix"),
        ({"ui_domain": "UI_EXAMPLE"}, "uiDomain"),
    ],
)
def test_bad_access_settings_name_the_key(values: dict[str, Any], key: str):
    with pytest.raises(SettingsError, match=f"'{key}'"):
        AccessSettings.from_mapping(values)


def test_internal_load_balancers_without_certificate_or_cidrs(rendered: list[Manifest]):
    out = expose(rendered, AccessSettings())
    for name in ("flywheel-api", "flywheel-ui"):
        service = _service(out, name)
        annotations = service["metadata"]["annotations"]
        assert annotations[INTERNAL] == "true"
        assert annotations[SCHEME] == "internal"
        assert SSL_CERT not in annotations
        assert "loadBalancerSourceRanges" not in service["spec"]
    assert [p["port"] for p in _service(out, "flywheel-ui")["spec"]["ports"]] == [80]
    assert _service(rendered, "flywheel-ui")["metadata"]["annotations"].get(INTERNAL) is None  # input untouched


def test_allowed_cidrs_open_the_viewer_only_ui_to_those_networks_and_keep_the_api_internal(rendered: list[Manifest]):
    settings = AccessSettings.from_mapping({"allowed_cidrs": "203.0.113.0/24,2001:db8::/32"})
    assert settings.exposure is Exposure.ALLOW_LIST
    out = expose(rendered, settings)
    ui = _service(out, "flywheel-ui")
    assert ui["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "2001:db8::/32"]
    assert INTERNAL not in ui["metadata"]["annotations"]
    assert ui["metadata"]["annotations"][SCHEME] == "internet-facing"
    assert SSL_CERT not in ui["metadata"]["annotations"]
    # API keys never cross the internet in plain HTTP: without a certificate the API stays internal
    api = _service(out, "flywheel-api")["metadata"]["annotations"]
    assert api[INTERNAL] == "true" and api[SCHEME] == "internal"


def test_a_certificate_makes_every_listener_tls(rendered: list[Manifest]):
    settings = AccessSettings.from_mapping({"ui_domain": "ui.example.com", "certificate_arn": CERT})
    out = expose(rendered, settings)
    ui, api = _service(out, "flywheel-ui"), _service(out, "flywheel-api")
    assert [(p["name"], p["port"], p["targetPort"]) for p in ui["spec"]["ports"]] == [("https", 443, "http")]
    # The API keeps 8080 (the UI's in-cluster address, which never passes the NLB) and gets 443; both TLS.
    assert [(p["name"], p["port"]) for p in api["spec"]["ports"]] == [("http", 8080), ("https", 443)]
    for service, ports in ((ui, "443"), (api, "8080,443")):
        annotations = service["metadata"]["annotations"]
        assert annotations[SSL_CERT] == CERT
        assert annotations[SSL_PORTS] == ports
        assert annotations[SSL_POLICY] == TLS_POLICY
        assert annotations[BACKEND_PROTOCOL] == "tcp"
        assert annotations[SCHEME] == "internet-facing"
        assert INTERNAL not in annotations
        assert "loadBalancerSourceRanges" not in service["spec"]


def test_the_overlay_may_not_decide_the_exposure(rendered: list[Manifest]):
    docs = [dict(d) for d in rendered]
    ui = _service(docs, "flywheel-ui")
    ui["metadata"] = {**ui["metadata"], "annotations": {**ui["metadata"]["annotations"], SSL_CERT: CERT}}
    with pytest.raises(ManifestError, match="decides the exposure"):
        expose(docs, AccessSettings())
    with pytest.raises(ManifestError, match="lacks Service flywheel-ui"):
        expose([d for d in rendered if d["metadata"]["name"] != "flywheel-ui"], AccessSettings())


@pytest.mark.parametrize(
    ("values", "ui", "api"),
    [
        ({}, "UI: internal only, viewer-only", "API: internal only"),
        (
            {"allowed_cidrs": "203.0.113.0/24"},
            "only from 203.0.113.0/24, plain HTTP; viewer-only: set uiDomain+certificateArn",
            "API: internal only",
        ),
        (
            {"ui_domain": "ui.example.com", "api_domain": "api.example.com", "certificate_arn": CERT},
            "UI: https://ui.example.com (OIDC sign-in, TLS); point DNS for ui.example.com",
            "API: https://api.example.com (API key required, TLS); point DNS for api.example.com",
        ),
    ],
)
def test_outputs_say_which_mode_each_endpoint_is_in(values: dict[str, Any], ui: str, api: str):
    stack = Stack(App(), "Outputs")
    outputs = endpoint_outputs(
        AccessSettings.from_mapping(values), ui_host="UIHOST", api_host="APIHOST", ui_port=80, api_port=8080
    )
    text = {name: joined(stack.resolve(value)) for name, (value, _) in outputs.items()}
    assert ui in text["UiAccess"]
    assert api in text["ApiAccess"]
    if values.get("certificate_arn"):
        assert text["UiUrl"] == "https://ui.example.com"
        assert text["ApiUrl"] == "https://api.example.com"
    else:
        assert text["UiUrl"] == "http://UIHOST:80"
        assert text["ApiUrl"] == "http://APIHOST:8080"
