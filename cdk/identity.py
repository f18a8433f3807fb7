"""The UI's OIDC sign-in: a Cognito user pool (default) or an external issuer's client settings, and the cookie
secret Streamlit signs its auth cookie with.

The UI signs users in with Streamlit's native OIDC (authorization-code flow, callback `/oauth2callback`): the
launcher reads the client settings from Secrets Manager (JSON {client_id, client_secret, server_metadata_url,
redirect_uri}) and the cookie secret (plain string), both by id from the pod's ConfigMap (docs/security.md).
Roles come from the groups claim: `flywheel-operators` and `flywheel-viewers`.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.access_settings import AccessSettings
from cdk.grants import secret_read_statements

OPERATOR_GROUP = "flywheel-operators"
VIEWER_GROUP = "flywheel-viewers"
#: Streamlit's native OIDC redirect path.
CALLBACK_PATH = "/oauth2callback"


class UiIdentity(Construct):
    """OIDC client settings (Cognito's, or an existing secret) and a generated cookie secret, for the UI pods."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: AccessSettings, retain: bool) -> None:
        super().__init__(scope, construct_id)
        assert settings.ui_domain is not None, "OIDC sign-in needs the UI's domain"
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self.redirect_uri = f"https://{settings.ui_domain}{CALLBACK_PATH}"
        self.user_pool: cognito.UserPool | None = None
        self.client: cognito.UserPoolClient | None = None
        self.domain: cognito.UserPoolDomain | None = None
        self._key_arn = settings.oidc_config_secret_key_arn
        if settings.oidc_config_secret_arn:
            self.oidc_secret = secretsmanager.Secret.from_secret_complete_arn(
                self, "OidcConfig", settings.oidc_config_secret_arn
            )
        else:
            self.oidc_secret = self._cognito(settings, removal)
        self.cookie_secret = secretsmanager.Secret(
            self,
            "CookieSecret",
            description="Flywheel UI: Streamlit auth cookie_secret (plain string)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
            removal_policy=RemovalPolicy.DESTROY,  # a new one only signs everybody out
        )

    def _cognito(self, settings: AccessSettings, removal: RemovalPolicy) -> secretsmanager.ISecret:
        pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,  # operators add users (docs/security.md)
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            # Threat protection (compromised credentials, adaptive authentication) needs the Plus feature plan:
            # a few cents per monthly active user, small next to the cluster for a handful of operators.
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=removal is RemovalPolicy.RETAIN,
            removal_policy=removal,
        )
        for group, description in (
            (OPERATOR_GROUP, "Flywheel operators: upload, promote, roll back, force"),
            (VIEWER_GROUP, "Flywheel viewers: predict and browse"),
        ):
            cognito.CfnUserPoolGroup(
                self, group, user_pool_id=pool.user_pool_id, group_name=group, description=description
            )
        # Unique per region across all accounts: the stack's name (Flywheel-<envName>) and the account and region.
        stack_name = Stack.of(self).stack_name.lower()
        prefix = settings.cognito_domain_prefix or Fn.join("-", [stack_name, Aws.ACCOUNT_ID, Aws.REGION])
        self.domain = pool.add_domain("HostedUi", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix))
        self.client = pool.add_client(
            "UiClient",
            generate_secret=True,
            auth_flows=cognito.AuthFlow(),  # no direct password flows: the hosted UI only
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=[self.redirect_uri],
                logout_urls=[f"https://{settings.ui_domain}/"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
        )
        self.user_pool = pool
        metadata_url = Fn.join(
            "",
            [
                "https://cognito-idp.",
                Aws.REGION,
                ".amazonaws.com/",
                pool.user_pool_id,
                "/.well-known/openid-configuration",
            ],
        )
        return secretsmanager.Secret(
            self,
            "OidcConfig",
            description="Flywheel UI: OIDC client settings of the Cognito user pool (JSON)",
            secret_object_value={
                "client_id": SecretValue.unsafe_plain_text(self.client.user_pool_client_id),
                "client_secret": self.client.user_pool_client_secret,
                "server_metadata_url": SecretValue.unsafe_plain_text(metadata_url),
                "redirect_uri": SecretValue.unsafe_plain_text(self.redirect_uri),
            },
            removal_policy=RemovalPolicy.DESTROY,  # derived from the client: the stack re-creates it
        )

    @property
    def secret_arns(self) -> list[str]:
        """The two secrets the UI pods read."""
        return [self.oidc_secret.secret_arn, self.cookie_secret.secret_arn]

    def statements(self) -> list[iam.PolicyStatement]:
        """GetSecretValue on exactly the two secrets; kms:Decrypt through Secrets Manager if a CMK encrypts one."""
        return secret_read_statements(self.secret_arns, self._key_arn)
