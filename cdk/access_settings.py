"""Who can reach the UI and the API, and how they sign in: the access settings read from CDK context.

Kept apart from cdk/settings.py (deployment shape) because they decide the exposure mode together:

- `uiDomain` + `certificateArn` (ACM; `apiDomain` optional): both Services get NLB TLS listeners with that
  certificate, internet-facing; the UI signs users in with OIDC (a Cognito user pool the stack creates, or the
  issuer whose client settings `oidcConfigSecretArn` holds).
- no certificate, `allowedCidrs`: internet-facing, plain HTTP, only from those CIDRs; the UI is viewer-only.
- neither: both load balancers are internal (reachable from the VPC only); the UI is viewer-only.

Nothing is ever open to the whole internet without TLS: 0.0.0.0/0 and ::/0 are refused. Every key is documented
in docs/deploy.md; a bad value fails the synth naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from constructs import Node

from cdk.context import check_all, matches, optional, parse_str, parse_str_tuple, parse_values, read_context
from cdk.network_allowlists import check_cidrs

#: Claim that carries the user's groups in a Cognito ID token (the UI's default FLYWHEEL_UI_ROLE_CLAIM).
COGNITO_ROLE_CLAIM = "cognito:groups"
_DOMAIN = re.compile(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_ACM_ARN = re.compile(r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")
# Cognito refuses prefixes containing "aws", "amazon" or "cognito"; lower-case letters, digits and hyphens.
_COGNITO_PREFIX = re.compile(r"(?!.*(aws|amazon|cognito))[a-z0-9](-?[a-z0-9]){0,62}")


class Exposure(Enum):
    """How the UI and API load balancers are exposed."""

    TLS = "tls"  # internet-facing, TLS with certificateArn, OIDC sign-in for the UI
    ALLOW_LIST = "allow-list"  # internet-facing plain HTTP, only from allowedCidrs; UI viewer-only
    INTERNAL = "internal"  # internal load balancers (VPC only); UI viewer-only


@dataclass(frozen=True, kw_only=True)
class AccessSettings:
    """Exposure and identity settings. Context keys are the field names in camelCase."""

    ui_domain: str | None = None
    api_domain: str | None = None
    certificate_arn: str | None = None
    allowed_cidrs: tuple[str, ...] = ()
    #: An existing Secrets Manager secret with {client_id, client_secret, server_metadata_url, redirect_uri} of an
    #: external OIDC issuer: no Cognito user pool is created.
    oidc_config_secret_arn: str | None = None
    #: The customer-managed KMS key that encrypts that secret, if any (the UI role gets kms:Decrypt through
    #: Secrets Manager only).
    oidc_config_secret_key_arn: str | None = None
    oidc_role_claim: str | None = None
    #: Prefix of the Cognito hosted-UI domain (<prefix>.auth.<region>.amazoncognito.com); globally unique per region.
    cognito_domain_prefix: str | None = None

    @property
    def exposure(self) -> Exposure:
        """The mode the settings select."""
        if self.certificate_arn:
            return Exposure.TLS
        return Exposure.ALLOW_LIST if self.allowed_cidrs else Exposure.INTERNAL

    @property
    def creates_user_pool(self) -> bool:
        """A Cognito user pool is created when the UI signs in with OIDC and no external issuer is given."""
        return self.exposure is Exposure.TLS and not self.oidc_config_secret_arn

    @property
    def role_claim(self) -> str:
        """FLYWHEEL_UI_ROLE_CLAIM: `oidcRoleClaim`, else Cognito's group claim."""
        return self.oidc_role_claim or COGNITO_ROLE_CLAIM

    @classmethod
    def from_context(cls, node: Node) -> AccessSettings:
        """Read every field from the construct tree's context; unset keys keep the defaults above."""
        return cls.from_mapping(read_context(cls, node))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> AccessSettings:
        """Build from snake_case keys (strings as `-c key=value` gives them), then validate."""
        parsed = parse_values(
            cls, values, lambda name: parse_str_tuple if name == "allowed_cidrs" else optional(parse_str)
        )
        settings = cls(**parsed)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError naming the first context key that is malformed or inconsistent."""
        check_all(self, self._checks())
        check_cidrs(
            "allowed_cidrs",
            self.allowed_cidrs,
            opens="the load balancers",
            instead="list the networks that may reach them, or set uiDomain and certificateArn for HTTPS with OIDC "
            "sign-in",
        )

    def _checks(self) -> list[tuple[str, bool, str]]:
        tls = self.certificate_arn is not None
        return [
            ("ui_domain", self.ui_domain is None or _DOMAIN.fullmatch(self.ui_domain) is not None, "a DNS name"),
            ("api_domain", self.api_domain is None or _DOMAIN.fullmatch(self.api_domain) is not None, "a DNS name"),
            (
                "certificate_arn",
                self.certificate_arn is None or _ACM_ARN.fullmatch(self.certificate_arn) is not None,
                "an ACM certificate ARN",
            ),
            ("certificate_arn", tls or self.ui_domain is None, "an ACM certificate ARN when uiDomain is set"),
            ("ui_domain", self.ui_domain is not None or not tls, "the UI's DNS name when certificateArn is set"),
            ("api_domain", self.api_domain is None or tls, "unset without certificateArn (no TLS, no name)"),
            (
                "oidc_config_secret_arn",
                self.oidc_config_secret_arn is None or _SECRET_ARN.fullmatch(self.oidc_config_secret_arn) is not None,
                "a complete Secrets Manager secret ARN (with its 6-character suffix)",
            ),
            (
                "oidc_config_secret_arn",
                self.oidc_config_secret_arn is None or tls,
                "unset without uiDomain and certificateArn (OIDC sign-in needs HTTPS)",
            ),
            (
                "oidc_config_secret_key_arn",
                self.oidc_config_secret_key_arn is None
                or (
                    self.oidc_config_secret_arn is not None
                    and _KMS_KEY_ARN.fullmatch(self.oidc_config_secret_key_arn) is not None
                ),
                "a KMS key ARN, and only with oidcConfigSecretArn",
            ),
            (
                "oidc_role_claim",
                self.oidc_role_claim is None or matches(r"[A-Za-z0-9:_./-]{1,128}", self.oidc_role_claim),
                "a claim name",
            ),
            (
                "cognito_domain_prefix",
                self.cognito_domain_prefix is None or _COGNITO_PREFIX.fullmatch(self.cognito_domain_prefix) is not None,
                "lower-case letters, digits and single hyphens, <= 63 chars, without aws, amazon or cognito",
            ),
        ]
