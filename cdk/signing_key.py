"""The manifest signing key: a KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY) the trainer signs with and the
API pods verify with (docs/security.md).

Rotation: KMS does not rotate asymmetric keys (automatic rotation is for symmetric encryption keys only), so
none is configured; rotating means a new key and a redeploy (docs/security.md, "Rotating the signing key").

The key policy keeps CDK's default statement (the account may administer the key and delegate through IAM)
and adds, after the roles exist (`allow`):
- `kms:Sign` for the signers (trainer Lambda role, Batch job role) only: an explicit Deny of `kms:Sign` to
  every principal whose `aws:PrincipalArn` is not one of theirs, so no IAM policy of the account can grant it;
- `kms:GetPublicKey` and `kms:Verify` for the verifiers (the API and UI pods' roles, and the trainers', which check
  the production version's signature before the gate loads it).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

SIGN_ACTIONS = ["kms:Sign"]
VERIFY_ACTIONS = ["kms:GetPublicKey", "kms:Verify"]


class SigningKey(Construct):
    """One asymmetric signing key; `allow` writes who may sign and who may verify into its key policy."""

    def __init__(self, scope: Construct, construct_id: str, *, retain: bool) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Flywheel: signs model manifests (trainer) and verifies them (API pods)",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            enable_key_rotation=False,  # KMS cannot rotate asymmetric keys
            # A deleted key makes every signed version unverifiable: keep it unless the data goes too.
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
        )

    @property
    def key_arn(self) -> str:
        return self.key.key_arn

    def allow(self, *, signers: Sequence[iam.IRole], verifiers: Sequence[iam.IRole]) -> None:
        """Signers may `kms:Sign` (nobody else may, whatever IAM says); verifiers may read the public key and verify."""
        signer_arns = [role.role_arn for role in signers]
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="SignersSign",
                actions=SIGN_ACTIONS,
                principals=[iam.ArnPrincipal(arn) for arn in signer_arns],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="NobodyElseSigns",
                effect=iam.Effect.DENY,
                actions=SIGN_ACTIONS,
                principals=[iam.AnyPrincipal()],
                resources=["*"],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": signer_arns}},
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="VerifiersVerify",
                actions=VERIFY_ACTIONS,
                principals=[iam.ArnPrincipal(role.role_arn) for role in verifiers],
                resources=["*"],
            )
        )
