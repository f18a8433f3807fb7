"""Set the UI and API Services of the rendered overlay to the exposure mode, and say in words what it is.

The overlay stays the single source of the manifests: this only adds the in-tree AWS cloud provider's load
balancer annotations (and the TLS port) that depend on CDK context, after the placeholders are filled in.
The overlay itself must not decide the exposure (synth fails if it sets any of these annotations).
"""

from __future__ import annotations

import copy
from typing import Any

from aws_cdk import Fn

from cdk.access_settings import AccessSettings, Exposure
from cdk.manifests import API_SERVICE, UI_SERVICE, Manifest, ManifestError

_LB = "service.beta.kubernetes.io/aws-load-balancer-"
INTERNAL = f"{_LB}internal"
#: Read by the AWS Load Balancer Controller, ignored by the in-tree provider (which reads INTERNAL): set too, so
#: switching the overlay to the controller keeps the mode.
SCHEME = f"{_LB}scheme"
SSL_CERT = f"{_LB}ssl-cert"
SSL_PORTS = f"{_LB}ssl-ports"
SSL_POLICY = f"{_LB}ssl-negotiation-policy"
BACKEND_PROTOCOL = f"{_LB}backend-protocol"
#: TLS 1.3 and 1.2 only (the NLB TLS listener's policy).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HTTPS_PORT = 443
_DECIDED_HERE = (INTERNAL, SCHEME, SSL_CERT, SSL_PORTS, SSL_POLICY, BACKEND_PROTOCOL)


def expose(manifests: list[Manifest], settings: AccessSettings) -> list[Manifest]:
    """Copy of `manifests` with both Services annotated (and ported) for `settings.exposure`.

    TLS: internet-facing, every listener TLS with the certificate (backend plain TCP to the pods); the UI's port
    becomes 443, the API gets 443 beside 8080 (its in-cluster address, which the UI calls without the NLB).
    Allow-list: the UI (viewer-only: it takes no credentials) internet-facing with `loadBalancerSourceRanges` =
    allowedCidrs; the API stays internal, because API keys must never cross the internet in plain HTTP.
    Internal: internal load balancers. allowedCidrs also restricts the TLS load balancers when given.
    """
    out = copy.deepcopy(manifests)
    found = set()
    for doc in out:
        name = doc.get("metadata", {}).get("name")
        if doc.get("kind") == "Service" and name in (API_SERVICE, UI_SERVICE):
            _patch(doc, settings, keep_ports=name == API_SERVICE)
            found.add(name)
    if missing := {API_SERVICE, UI_SERVICE} - found:
        raise ManifestError(f"the eks overlay lacks Service {', '.join(sorted(missing))}")
    return out


def _patch(service: Manifest, settings: AccessSettings, *, keep_ports: bool) -> None:
    name = service["metadata"]["name"]
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        raise ManifestError(f"Service {name} is not of type LoadBalancer; the stack exposes it through an NLB")
    annotations: dict[str, str] = service["metadata"].setdefault("annotations", {}) or {}
    service["metadata"]["annotations"] = annotations
    if preset := sorted(set(annotations) & set(_DECIDED_HERE)):
        raise ManifestError(
            f"Service {name} sets {', '.join(preset)} in the overlay; the stack decides the exposure from context "
            "(uiDomain, certificateArn, allowedCidrs: docs/deploy.md)"
        )
    if "loadBalancerSourceRanges" in spec:
        raise ManifestError(f"Service {name} sets loadBalancerSourceRanges in the overlay; use context allowedCidrs")
    mode = settings.exposure
    if mode is Exposure.INTERNAL or (mode is Exposure.ALLOW_LIST and name == API_SERVICE):
        annotations[INTERNAL] = "true"
        annotations[SCHEME] = "internal"
        return
    annotations[SCHEME] = "internet-facing"
    if settings.allowed_cidrs:
        spec["loadBalancerSourceRanges"] = list(settings.allowed_cidrs)
    if mode is Exposure.TLS:
        assert settings.certificate_arn is not None
        first = spec["ports"][0]
        https = {"name": "https", "port": HTTPS_PORT, "targetPort": first["targetPort"], "protocol": "TCP"}
        spec["ports"] = [*spec["ports"], https] if keep_ports else [https]
        annotations[SSL_CERT] = settings.certificate_arn
        annotations[SSL_PORTS] = ",".join(str(p["port"]) for p in spec["ports"])  # no plain listener at all
        annotations[SSL_POLICY] = TLS_POLICY
        annotations[BACKEND_PROTOCOL] = "tcp"


def endpoint_outputs(
    settings: AccessSettings, *, ui_host: str, api_host: str, ui_port: int, api_port: int
) -> dict[str, tuple[Any, str]]:
    """Stack outputs: `UiUrl`/`ApiUrl` (a URL) and `UiAccess`/`ApiAccess` (the mode, in plain words)."""
    mode = settings.exposure
    if mode is Exposure.TLS:
        ui_url: Any = f"https://{settings.ui_domain}"
        api_url: Any = f"https://{settings.api_domain}" if settings.api_domain else Fn.join("", ["https://", api_host])
        limit = f"; only from {', '.join(settings.allowed_cidrs)}" if settings.allowed_cidrs else ""
        ui_access = Fn.join(
            "",
            [f"UI: {ui_url} (OIDC sign-in, TLS{limit}); point DNS for {settings.ui_domain} (CNAME) at ", ui_host],
        )
        api_name = (
            f"point DNS for {settings.api_domain} (CNAME) at "
            if settings.api_domain
            else "no apiDomain: the certificate does not name this host, set apiDomain and point its DNS at "
        )
        api_access = Fn.join("", ["API: ", api_url, f" (API key required, TLS{limit}); {api_name}", api_host])
        return _outputs(ui_url, ui_access, api_url, api_access)
    ui_url = Fn.join("", ["http://", ui_host, f":{ui_port}"])
    api_url = Fn.join("", ["http://", api_host, f":{api_port}"])
    fix = "set uiDomain+certificateArn for HTTPS with OIDC sign-in"
    if mode is Exposure.ALLOW_LIST:
        where = f"only from {', '.join(settings.allowed_cidrs)}, plain HTTP"
        ui_access = Fn.join("", ["UI: ", ui_url, f" ({where}; viewer-only: {fix})"])
        api_access = Fn.join("", ["API: internal only (", api_url, " from the VPC; API key required): without a "
                                  f"certificate, keys never cross the internet in plain HTTP; {fix}"])  # fmt: skip
    else:
        ui_access = Fn.join("", ["UI: internal only, viewer-only (", ui_url, f" from the VPC); {fix}, or allowedCidrs"])
        api_access = Fn.join("", ["API: internal only (", api_url, " from the VPC; API key required)"])
    return _outputs(ui_url, ui_access, api_url, api_access)


def _outputs(ui_url: Any, ui_access: Any, api_url: Any, api_access: Any) -> dict[str, tuple[Any, str]]:
    return {
        "UiUrl": (ui_url, "Streamlit UI"),
        "UiAccess": (ui_access, "how the UI is exposed and how users sign in"),
        "ApiUrl": (api_url, "prediction API"),
        "ApiAccess": (api_access, "how the API is exposed"),
    }
