"""API keys in Secrets Manager: the hashed key store the API checks requests against, and the UI's own key.

The store holds hashes only, JSON {"keys": [{"id", "name", "role", "sha256", "created_at", "created_by"}]};
`flywheel apikey create --name N [--role operator]` adds one (the plain key is printed once, never stored). The
UI's key is a generated plain string the API accepts as a service key (role client) and the UI sends.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

#: Length of the UI's generated key: letters and digits only, so it travels in a header as it is.
UI_KEY_LENGTH = 64
EMPTY_STORE = '{"keys": []}'


class ApiKeys(Construct):
    """The key store (hashes) and the UI's service key."""

    def __init__(self, scope: Construct, construct_id: str, *, retain: bool) -> None:
        super().__init__(scope, construct_id)
        self.store = secretsmanager.Secret(
            self,
            "Store",
            description="Flywheel API keys: hashes only (flywheel apikey create/revoke edit it)",
            secret_string_value=SecretValue.unsafe_plain_text(EMPTY_STORE),  # no key in it: nothing to hide
            # Losing the store locks every client out: kept on stack deletion like the data, unless retainData=false.
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
        )
        self.ui_key = secretsmanager.Secret(
            self,
            "UiKey",
            description="Flywheel UI's own API key (plain string; a service key of the API)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=UI_KEY_LENGTH, exclude_punctuation=True, include_space=False
            ),
            removal_policy=RemovalPolicy.DESTROY,  # the stack generates a new one; both pods read it at start
        )

    def api_statements(self) -> list[iam.PolicyStatement]:
        """The API pods read the store and the UI's key (to accept it)."""
        return [
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[self.store.secret_arn, self.ui_key.secret_arn],
            )
        ]

    def ui_statements(self) -> list[iam.PolicyStatement]:
        """The UI pods read their own key only, never the store."""
        return [iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[self.ui_key.secret_arn])]
