"""Access control on the cloud side, wired in one place: the UI's identity provider, the API keys, who reads which
secret, the pods' ConfigMap values and the outputs that say how each endpoint is exposed (docs/security.md)."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.access_settings import AccessSettings, Exposure
from cdk.api_keys import ApiKeys
from cdk.data_bucket import HISTORY_KEYS
from cdk.grants import grant
from cdk.identity import UiIdentity
from cdk.rollout_judge import ROLLOUT_KEYS

#: FLYWHEEL_UI_AUTH per exposure: OIDC sign-in needs HTTPS; without it nobody changes production from the UI.
UI_AUTH = {Exposure.TLS: "oidc", Exposure.ALLOW_LIST: "viewer-only", Exposure.INTERNAL: "viewer-only"}
API_AUTH = "api-keys"
#: What an operator's Promote candidate / Abort rollout on the UI's Models page writes besides the production alias
#: (granted with the UI's other writes, cdk/grants.py `ui_statements`): the rollout state (compare-and-swap) and
#: the candidate's history events (create-only; the bucket policy lets these through for this role only with
#: sign-in, `DataBucket.reserve_versions`). The UI starts no rollout: nothing else of the judge's is needed.
UI_ROLLOUT_KEYS = (ROLLOUT_KEYS, HISTORY_KEYS)


def ui_may_write(exposure: Exposure) -> bool:
    """Whether the UI pods' role may write at all: only with sign-in (`oidc`), where an operator is somebody."""
    return UI_AUTH[exposure] == "oidc"


def ui_rollout_statements(bucket: s3.IBucket, *, writes: bool) -> list[iam.PolicyStatement]:
    """PutObject on exactly UI_ROLLOUT_KEYS when the UI may write (`ui_may_write`); nothing otherwise."""
    if not writes:
        return []
    return [
        iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(k)]) for k in UI_ROLLOUT_KEYS
    ]


class Access(Construct):
    """The secrets of access control and their grants: the API pods read the key store and the UI's key; the UI pods
    read their key, and in OIDC mode the client settings and the cookie secret. Nothing else reads any of them."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: AccessSettings,
        api_role: iam.IRole,
        ui_role: iam.IRole,
        retain: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.api_keys = ApiKeys(self, "ApiKeys", retain=retain)
        self.identity = (
            UiIdentity(self, "Identity", settings=settings, retain=retain)
            if settings.exposure is Exposure.TLS
            else None
        )
        grant(api_role, self.api_keys.api_statements())
        grant(ui_role, self.api_keys.ui_statements())
        if self.identity is not None:
            grant(ui_role, self.identity.statements())

    @property
    def config(self) -> dict[str, str]:
        """The access values of the pods' `flywheel-config` ConfigMap (the contract of issue 12)."""
        identity = self.identity
        return {
            "FLYWHEEL_UI_AUTH": UI_AUTH[self.settings.exposure],
            "FLYWHEEL_UI_OIDC_SECRET_ID": identity.oidc_secret.secret_arn if identity else "",
            "FLYWHEEL_UI_COOKIE_SECRET_ID": identity.cookie_secret.secret_arn if identity else "",
            "FLYWHEEL_UI_ROLE_CLAIM": self.settings.role_claim if identity else "",
            "FLYWHEEL_API_AUTH": API_AUTH,
            "FLYWHEEL_API_KEYS_SECRET_ID": self.api_keys.store.secret_arn,
            "FLYWHEEL_API_SERVICE_KEY_SECRET_IDS": self.api_keys.ui_key.secret_arn,
            "FLYWHEEL_API_KEY_SECRET_ID": self.api_keys.ui_key.secret_arn,
        }

    def outputs(self) -> dict[str, tuple[Any, str]]:
        """Outputs an operator needs: the key store (for `flywheel apikey create`) and, with Cognito, the pool."""
        out: dict[str, tuple[Any, str]] = {
            "ApiKeysSecretArn": (
                self.api_keys.store.secret_arn,
                "hashed API key store; flywheel apikey create needs secretsmanager:GetSecretValue and "
                "PutSecretValue on it",
            ),
            "UiApiKeySecretArn": (self.api_keys.ui_key.secret_arn, "the UI's own API key (a service key of the API)"),
        }
        identity = self.identity
        if identity is not None and identity.user_pool is not None and identity.domain is not None:
            out["UserPoolId"] = (
                identity.user_pool.user_pool_id,
                "Cognito user pool of the UI: add users to flywheel-operators or flywheel-viewers (docs/security.md)",
            )
            out["SignInDomain"] = (identity.domain.base_url(), "Cognito hosted sign-in page")
        if identity is not None:
            out["UiOidcSecretArn"] = (identity.oidc_secret.secret_arn, "OIDC client settings the UI signs in with")
        return out
