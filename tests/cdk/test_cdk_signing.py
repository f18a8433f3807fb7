"""The manifest signing key: asymmetric, sign for the trainer (Lambda and Batch job) only, verify for the API pods."""

from __future__ import annotations

from typing import Any

from cdk_fixtures import InProcessSynth, actions, app_config, only, trainer_environment


def _key(synth: InProcessSynth) -> tuple[str, dict[str, Any]]:
    return only(synth.resources("AWS::KMS::Key"), "SigningKey")


def _role(synth: InProcessSynth, prefix: str) -> dict[str, Any]:
    role_id, _ = only(synth.resources("AWS::IAM::Role"), prefix)
    return {"Fn::GetAtt": [role_id, "Arn"]}


def _statements(synth: InProcessSynth) -> list[dict[str, Any]]:
    return list(_key(synth)[1]["Properties"]["KeyPolicy"]["Statement"])


def _principals(statement: dict[str, Any]) -> list[Any]:
    aws = statement["Principal"]["AWS"]
    return aws if isinstance(aws, list) else [aws]


def test_key_is_an_asymmetric_p256_signing_key_without_rotation(synth: InProcessSynth):
    _, key = _key(synth)
    props = key["Properties"]
    assert (props["KeySpec"], props["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert props["EnableKeyRotation"] is False  # KMS does not rotate asymmetric keys
    assert key["DeletionPolicy"] == "Retain"  # retainData=true: signed versions stay verifiable


def test_key_is_deleted_with_the_data_only(prod: InProcessSynth):
    _, key = only(prod.resources("AWS::KMS::Key"), "SigningKey")
    assert key["DeletionPolicy"] == "Delete"  # retainData=false


def test_only_the_trainer_roles_may_sign(synth: InProcessSynth):
    signers = [_role(synth, "TrainerRole"), _role(synth, "TrainerJobJobRole")]
    statements = _statements(synth)
    allows = [s for s in statements if s["Effect"] == "Allow" and {"kms:Sign", "kms:*"} & set(actions(s))]
    # The account root's kms:* (CDK's default: administration and IAM delegation) and the signers' grant.
    assert len(allows) == 2
    (grant,) = [s for s in allows if s.get("Sid") == "SignersSign"]
    assert actions(grant) == ["kms:Sign"]
    assert _principals(grant) == signers
    # An explicit deny beats any IAM allow: nobody but the two roles signs, however the account's IAM is set up.
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert actions(deny) == ["kms:Sign"]
    assert deny["Principal"] == {"AWS": "*"}
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": signers}}
    # The pods' and the UI's roles appear nowhere with kms:Sign.
    for prefix in ("ServingAppPodRole", "ServingUiPodRole"):
        role = _role(synth, prefix)
        assert not any(role in _principals(s) for s in allows)


def test_the_pods_and_the_trainers_may_verify_and_read_the_public_key(synth: InProcessSynth):
    """The trainers verify production's signature before the gate loads that version (docs/security.md)."""
    (verify,) = [s for s in _statements(synth) if s.get("Sid") == "VerifiersVerify"]
    assert verify["Effect"] == "Allow"
    assert sorted(actions(verify)) == ["kms:GetPublicKey", "kms:Verify"]
    assert _principals(verify) == [
        _role(synth, "ServingAppPodRole"),
        _role(synth, "ServingUiPodRole"),
        _role(synth, "TrainerRole"),
        _role(synth, "TrainerJobJobRole"),
    ]


def test_trainer_job_and_pods_are_given_the_key(synth: InProcessSynth):
    key_id, _ = _key(synth)
    arn = {"Fn::GetAtt": [key_id, "Arn"]}
    assert trainer_environment(synth)["FLYWHEEL_SIGNING_KMS_KEY_ID"] == arn
    _, definition = only(synth.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    env = {e["Name"]: e["Value"] for e in definition["Properties"]["ContainerProperties"]["Environment"]}
    assert env["FLYWHEEL_SIGNING_KMS_KEY_ID"] == arn
    config = app_config(synth)
    assert config["FLYWHEEL_VERIFY_KMS_KEY_ID"] == arn
    assert "FLYWHEEL_SIGNING_KMS_KEY_ID" not in config  # the pods never sign
    assert synth.template["Outputs"]["SigningKeyArn"]["Value"] == arn
