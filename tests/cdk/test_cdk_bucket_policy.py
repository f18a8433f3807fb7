"""The data bucket's policy reserves `models/*/versions/` to the trainer: nobody else writes or deletes a version."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from cdk_fixtures import InProcessSynth, actions, joined, only

from cdk.data_bucket import VERSION_WRITE_ACTIONS, VERSIONS_KEYS
from cdk.registrations import schema_key


def _policy_statements(synth: InProcessSynth) -> list[dict[str, Any]]:
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    (policy,) = [
        p for p in synth.resources("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def _reservation(synth: InProcessSynth) -> dict[str, Any]:
    (statement,) = [s for s in _policy_statements(synth) if s.get("Sid") == "OnlyTheTrainerWritesModelVersions"]
    return statement


def _arn(synth: InProcessSynth, prefix: str) -> dict[str, Any]:
    role_id, _ = only(synth.resources("AWS::IAM::Role"), prefix)
    return {"Fn::GetAtt": [role_id, "Arn"]}


def test_writes_and_deletes_of_versions_are_denied_to_all_but_the_trainer(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    statement = _reservation(synth)
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == {"AWS": "*"}
    assert sorted(actions(statement)) == ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"]
    assert joined(statement["Resource"]) == f'{{"Fn::GetAtt": ["{bucket_id}", "Arn"]}}/models/*/versions/*'
    # The trainer Lambda's and the Batch job's roles, nobody else: not the pods, not an administrator. And the
    # rollout judge's, whose IAM allows only history events under versions/ (test_cdk_judge.py).
    writers = [_arn(synth, "TrainerRole"), _arn(synth, "TrainerJobJobRole"), _arn(synth, "RolloutJudgeRole")]
    assert statement["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": writers}}


def test_only_the_provider_that_empties_the_bucket_is_added_when_data_is_not_kept(prod: InProcessSynth):
    """retainData=false: aws-cdk-lib's auto-delete provider must still empty the bucket on `cdk destroy`."""
    statement = _reservation(prod)
    provider = _arn(prod, "CustomS3AutoDeleteObjectsCustomResourceProviderRole")
    assert statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == [
        _arn(prod, "TrainerRole"),
        _arn(prod, "TrainerJobJobRole"),
        _arn(prod, "RolloutJudgeRole"),
        provider,
    ]
    # It is the principal of the bucket's own auto-delete statement (what the exception is for).
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"AWS": provider} for s in _policy_statements(prod)), (
        "auto-delete statement not found"
    )


def test_the_reserved_pattern_covers_the_version_keys_the_core_writes_and_nothing_else():
    """IAM's `*` matches like fnmatch's, `/` included."""
    from flywheel.registry import Registry

    assert VERSIONS_KEYS == "models/*/versions/*"
    assert VERSION_WRITE_ACTIONS == ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
    for name in ("savings", "churn-2"):
        registry = Registry(None, "bucket", name)
        for filename in ("model.joblib", "manifest.json", "manifest.json.sig"):
            assert fnmatchcase(registry.version_key(7, filename), VERSIONS_KEYS)
        # What others legitimately write stays outside: the alias (UI, operator), the registration (deploy),
        # the trainer's lock (the trainer may anyway), uploads.
        for key in (registry.alias_key, schema_key(name), registry.lock_key, f"data/{name}/batch.csv"):
            assert not fnmatchcase(key, VERSIONS_KEYS), key


def test_no_deploy_time_resource_writes_a_version(synth: InProcessSynth):
    """The stack's own writers (the model registrations' custom resources) put only schema.json keys."""
    registrations = synth.resources("Custom::FlywheelModelRegistration")
    assert registrations
    for resource in registrations.values():
        create = joined(resource["Properties"]["Create"])
        assert "/schema.json" in create
        assert "/versions/" not in create
