"""The data bucket's policy reserves `models/*/versions/` to the trainer: nobody else writes or deletes a version;
the history writers (the rollout judge, the UI with sign-in: tests/cdk/test_cdk_access.py) only add history."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from cdk_fixtures import InProcessSynth, actions, joined, only

from cdk.data_bucket import (
    HISTORY_KEYS,
    VERSION_DELETE_ACTIONS,
    VERSION_FILE_KEYS,
    VERSION_FILES,
    VERSION_WRITE_ACTIONS,
    VERSIONS_KEYS,
)
from cdk.registrations import schema_key
from cdk.rollout_judge import HISTORY_KEYS as JUDGE_HISTORY_KEYS

#: Keys of one version (v7 of `churn`): its own files, and a history event as flywheel.registry.history names one.
VERSION_FILE_KEYS_OF_V7 = [f"models/churn/versions/000007/{name}" for name in VERSION_FILES]
HISTORY_KEY_OF_V7 = "models/churn/versions/000007/history/20260101T000000.000000Z-promoted-0a1b2c3d.json"


def _policy_statements(synth: InProcessSynth) -> list[dict[str, Any]]:
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    (policy,) = [
        p for p in synth.resources("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def _statement(synth: InProcessSynth, sid: str) -> dict[str, Any]:
    (statement,) = [s for s in _policy_statements(synth) if s.get("Sid") == sid]
    return statement


def _reservation(synth: InProcessSynth) -> dict[str, Any]:
    return _statement(synth, "OnlyTheTrainerWritesModelVersions")


def role_arn(synth: InProcessSynth, prefix: str) -> dict[str, Any]:
    """The template's ARN of the one role whose logical id starts with `prefix` (as the policy names it)."""
    role_id, _ = only(synth.resources("AWS::IAM::Role"), prefix)
    return {"Fn::GetAtt": [role_id, "Arn"]}


def _object_keys(synth: InProcessSynth, statement: dict[str, Any]) -> list[str]:
    """A statement's resources as object-key patterns of the data bucket (the bucket ARN itself as "")."""
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    bucket = json.dumps({"Fn::GetAtt": [bucket_id, "Arn"]})
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    out = []
    for resource in resources:
        text = joined(resource)
        assert text.startswith(bucket), text
        out.append(text.removeprefix(bucket).removeprefix("/"))
    return out


def denied(synth: InProcessSynth, principal: dict[str, Any], action: str, key: str) -> bool:
    """Whether a Deny of the data bucket's policy applies to `principal` (a role's ARN as the template writes it)
    doing `action` on object `key` over TLS: Resource matched as IAM does (`*` crosses `/`, as fnmatch's), the
    aws:PrincipalArn conditions evaluated. The policy must use nothing else (asserted), so nothing is missed."""
    hits = []
    for statement in _policy_statements(synth):
        if statement["Effect"] != "Deny":
            continue
        assert statement["Principal"] == {"AWS": "*"}, statement
        assert "NotResource" not in statement and "NotAction" not in statement, statement
        condition = statement.get("Condition", {})
        if condition == {"Bool": {"aws:SecureTransport": "false"}}:
            continue  # enforce_ssl: the request is made over TLS
        assert set(condition) <= {"ArnEquals", "ArnNotEquals"}, statement
        arns = {op: [json.dumps(a) for a in c["aws:PrincipalArn"]] for op, c in condition.items()}
        me = json.dumps(principal)
        if "ArnEquals" in arns and me not in arns["ArnEquals"]:
            continue
        if "ArnNotEquals" in arns and me in arns["ArnNotEquals"]:
            continue
        if action in actions(statement) and any(fnmatchcase(key, k) for k in _object_keys(synth, statement)):
            hits.append(statement.get("Sid"))
    return bool(hits)


def assert_history_writers(synth: InProcessSynth, writers: list[dict[str, Any]]) -> None:
    """`writers` pass the reservation and are held by exactly two denies: no delete under versions/, no write of a
    version's own files (whatever their IAM allows); the structure, then the effect on keys."""
    assert all(w in _reservation(synth)["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] for w in writers)
    deletes = _statement(synth, "HistoryWritersDeleteNoVersionKey")
    assert deletes["Effect"] == "Deny" and deletes["Principal"] == {"AWS": "*"}
    assert actions(deletes) == VERSION_DELETE_ACTIONS == ["s3:DeleteObject", "s3:DeleteObjectVersion"]
    assert _object_keys(synth, deletes) == [VERSIONS_KEYS]
    assert deletes["Condition"] == {"ArnEquals": {"aws:PrincipalArn": writers}}
    files = _statement(synth, "HistoryWritersWriteNoVersionFile")
    assert files["Effect"] == "Deny" and files["Principal"] == {"AWS": "*"}
    assert actions(files) == VERSION_WRITE_ACTIONS
    assert _object_keys(synth, files) == [
        "models/*/versions/*/model.joblib",
        "models/*/versions/*/manifest.json",
        "models/*/versions/*/manifest.sig",
    ]
    assert files["Condition"] == {"ArnEquals": {"aws:PrincipalArn": writers}}
    for writer in writers:
        assert not denied(synth, writer, "s3:PutObject", HISTORY_KEY_OF_V7)
        for action in VERSION_DELETE_ACTIONS:
            assert denied(synth, writer, action, HISTORY_KEY_OF_V7)
        for key in VERSION_FILE_KEYS_OF_V7:
            for action in VERSION_WRITE_ACTIONS:
                assert denied(synth, writer, action, key), (writer, action, key)


def test_writes_and_deletes_of_versions_are_denied_to_all_but_the_trainer(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    statement = _reservation(synth)
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == {"AWS": "*"}
    assert sorted(actions(statement)) == ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"]
    assert joined(statement["Resource"]) == f'{{"Fn::GetAtt": ["{bucket_id}", "Arn"]}}/models/*/versions/*'
    # The trainer Lambda's and the Batch job's roles, nobody else: not the pods, not an administrator. And the
    # rollout judge's, held by the two statements below to history events (as its IAM: test_cdk_judge.py).
    writers = [
        role_arn(synth, "TrainerRole"),
        role_arn(synth, "TrainerJobJobRole"),
        role_arn(synth, "RolloutJudgeRole"),
    ]
    assert statement["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": writers}}


def test_the_judge_only_adds_history_under_versions(synth: InProcessSynth):
    """The default UI is viewer-only: the judge is the one history writer."""
    assert_history_writers(synth, [role_arn(synth, "RolloutJudgeRole")])


@pytest.mark.parametrize("prefix", ["ServingUiPodRole", "ServingAppPodRole"])
def test_without_sign_in_the_pods_write_nothing_under_versions(synth: InProcessSynth, prefix: str):
    role = role_arn(synth, prefix)
    for key in [*VERSION_FILE_KEYS_OF_V7, HISTORY_KEY_OF_V7]:
        for action in VERSION_WRITE_ACTIONS:
            assert denied(synth, role, action, key), (prefix, action, key)


def test_the_trainer_writes_versions_and_nobody_is_denied_outside_them(synth: InProcessSynth):
    trainer, ui = role_arn(synth, "TrainerRole"), role_arn(synth, "ServingUiPodRole")
    for key in [*VERSION_FILE_KEYS_OF_V7, HISTORY_KEY_OF_V7]:
        for action in VERSION_WRITE_ACTIONS:
            assert not denied(synth, trainer, action, key)
    for key in ("models/churn/aliases/production.json", "models/churn/rollout.json", "data/churn/b.csv"):
        assert not denied(synth, ui, "s3:PutObject", key)


def test_only_the_provider_that_empties_the_bucket_is_added_when_data_is_not_kept(prod: InProcessSynth):
    """retainData=false: aws-cdk-lib's auto-delete provider must still empty the bucket on `cdk destroy`."""
    statement = _reservation(prod)
    provider = role_arn(prod, "CustomS3AutoDeleteObjectsCustomResourceProviderRole")
    assert statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == [
        role_arn(prod, "TrainerRole"),
        role_arn(prod, "TrainerJobJobRole"),
        provider,
        role_arn(prod, "RolloutJudgeRole"),  # a history writer: held by the statements below
    ]
    assert_history_writers(prod, [role_arn(prod, "RolloutJudgeRole")])  # the provider is not one
    # It is the principal of the bucket's own auto-delete statement (what the exception is for).
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"AWS": provider} for s in _policy_statements(prod)), (
        "auto-delete statement not found"
    )


def test_the_reserved_pattern_covers_the_version_keys_the_core_writes_and_nothing_else():
    """IAM's `*` matches like fnmatch's, `/` included."""
    from flywheel.registry.store import Registry

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


class _RecordingS3:
    """Just enough of an S3 client for Registry.publish and history.record: records the keys put."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_object(self, *, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 (boto3's argument name)
        self.keys.append(Key)
        return {}

    def get_paginator(self, _: str) -> Any:
        class _Pages:
            def paginate(self, **__: Any) -> list[dict[str, Any]]:
                return []

        return _Pages()


def test_version_files_are_every_file_the_registry_publishes_and_history_is_none_of_them():
    """The history writers' deny names a version's files: a file the registry adds must be added there too."""
    from flywheel.registry import history
    from flywheel.registry.store import Registry

    class _Signer:
        def sign(self, message: bytes) -> bytes:
            return b"sig"

    s3 = _RecordingS3()
    registry = Registry(s3, "bucket", "churn")
    version = registry.publish(b"model", {"model": "churn"}, signer=_Signer())
    published = {key.removeprefix(registry.version_key(version, "")) for key in s3.keys}
    assert published == set(VERSION_FILES)
    history.record(registry, version, "promoted", "alice (operator, oidc)", "looks good")
    event = s3.keys[-1]
    assert JUDGE_HISTORY_KEYS == HISTORY_KEYS == "models/*/versions/*/history/*"
    assert fnmatchcase(event, HISTORY_KEYS) and fnmatchcase(event, VERSIONS_KEYS)
    assert not any(fnmatchcase(event, k) for k in VERSION_FILE_KEYS)
    for key in s3.keys[:-1]:
        assert not fnmatchcase(key, HISTORY_KEYS)
        assert sum(fnmatchcase(key, k) for k in VERSION_FILE_KEYS) == 1
