"""`captures/` and `feedback/` in the cloud (docs/captures.md): captured predictions expire after
`captureRetentionDays` (their noncurrent copies a day later), labels are kept; the API pods alone write `captures/`
(and read nothing there), the trainer's roles only read and list both prefixes, nobody else touches them."""

from __future__ import annotations

from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import pytest
from cdk_fixtures import InProcessSynth, only, role_statements, s3_grants

from cdk.data_bucket import CAPTURE_NONCURRENT_DAYS, CAPTURES_PREFIX, FEEDBACK_PREFIX
from cdk.settings import DeploySettings, SettingsError

#: The trainer's grants on the two prefixes, exactly: read objects, list the prefixes (with data/ and models/).
TRAINER_GRANTS = {
    ("s3:GetObject", "BUCKET/captures/*", ""),
    ("s3:GetObject", "BUCKET/feedback/*", ""),
    ("s3:ListBucket", "BUCKET", "data/*,models/*,captures/*,feedback/*"),
}


def _rules(synth: InProcessSynth) -> dict[str, dict[str, Any]]:
    _, bucket = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    return {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}


def _touching(grants: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """The grants whose object resource or listed prefix reaches `captures/` or `feedback/`."""
    out = set()
    for action, resource, prefixes in grants:
        keys = [resource.removeprefix("BUCKET/")] if resource.startswith("BUCKET/") else []
        keys += prefixes.split(",") if prefixes else []
        if resource in ("*", "BUCKET/*") or any(
            fnmatchcase(probe, key) for key in keys for probe in ("captures/m/x.parquet", "feedback/m/x.csv")
        ):
            out.add((action, resource, prefixes))
    return out


# --- lifecycle -------------------------------------------------------------------------------------------


def test_captures_expire_after_the_retention_and_their_noncurrent_copies_a_day_later(synth: InProcessSynth):
    assert DeploySettings().capture_retention_days == 30
    assert CAPTURE_NONCURRENT_DAYS == 1
    assert _rules(synth)["expire-captures"] == {
        "Id": "expire-captures",
        "Prefix": "captures/",
        "Status": "Enabled",
        "ExpirationInDays": 30,
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }


def test_feedback_is_kept_and_only_its_noncurrent_versions_expire(synth: InProcessSynth):
    """Labels are training data: no rule expires a current `feedback/` object; the bucket-wide rule removes its
    overwritten copies after `noncurrentVersionDays`, as under `data/`."""
    rules = _rules(synth)
    applying = [r for r in rules.values() if fnmatchcase("feedback/savings/labels.csv", r.get("Prefix", "") + "*")]
    assert [r["Id"] for r in applying] == ["expire-noncurrent-versions"]
    assert "ExpirationInDays" not in applying[0] and "ExpirationDate" not in applying[0]
    assert applying[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": DeploySettings().noncurrent_version_days}


def test_the_rule_covers_the_keys_the_core_writes():
    from flywheel.feedback import captures, labels

    assert captures.CAPTURES_PREFIX == CAPTURES_PREFIX and labels.FEEDBACK_PREFIX == FEEDBACK_PREFIX
    key = captures.capture_key("churn-eu", datetime(2026, 1, 2, tzinfo=UTC), "flywheel-app-0", 7)
    assert key.startswith(CAPTURES_PREFIX) and fnmatchcase(key, "captures/*")
    assert fnmatchcase(f"{labels.feedback_prefix('churn-eu')}labels.csv", "feedback/*")


# --- captureRetentionDays --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1", 1), (3650, 3650), (" 90 ", 90), (7, 7)])
def test_the_retention_is_parsed_from_context(value: object, expected: int):
    assert DeploySettings.from_mapping({"capture_retention_days": value}).capture_retention_days == expected


@pytest.mark.parametrize("value", [0, "0", -1, 3651, "3651", "30 days", "1.5", 2.0, True, "", None])
def test_a_bad_retention_names_the_context_key(value: object):
    with pytest.raises(SettingsError, match="captureRetentionDays"):
        DeploySettings.from_mapping({"capture_retention_days": value})


# --- IAM -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["TrainerRole", "TrainerJobJobRole"])
def test_the_trainer_only_reads_and_lists_captures_and_feedback(synth: InProcessSynth, role: str):
    # besides: the Lambda quarantines a bad feedback file (tests/cdk/test_cdk_feedback_arrival.py)
    extra = {("s3:GetObjectVersion", "BUCKET/feedback/*", ""), ("s3:DeleteObject", "BUCKET/feedback/*", "")}
    expected = TRAINER_GRANTS | (extra if role == "TrainerRole" else set())
    assert _touching(s3_grants(role_statements(synth, role))) == expected


def test_the_api_pods_only_put_captures(synth: InProcessSynth):
    """Create-only captures: no read, no list, no delete there, and nothing under `feedback/`."""
    assert _touching(s3_grants(role_statements(synth, "ServingAppPodRole"))) == {
        ("s3:PutObject", "BUCKET/captures/*", "")
    }


def test_the_ui_only_reads_and_lists_captures_and_feedback(synth: InProcessSynth):
    """The live quality section and the Drift page read them; with sign-in the UI's writes are listed exactly in
    test_cdk_access.py, and none is under either prefix."""
    assert _touching(s3_grants(role_statements(synth, "ServingUiPodRole"))) == {
        ("s3:GetObject", "BUCKET/captures/*", ""),
        ("s3:GetObject", "BUCKET/feedback/*", ""),
        ("s3:ListBucket", "BUCKET", "data/*,quarantine/*,models/*,captures/*,feedback/*"),
    }


def test_no_other_role_touches_captures_or_feedback(synth: InProcessSynth):
    for role_id in synth.resources("AWS::IAM::Role"):
        if role_id.startswith(("TrainerRole", "TrainerJobJobRole", "ServingAppPodRole", "ServingUiPodRole")):
            continue
        assert not _touching(s3_grants(role_statements(synth, role_id))), role_id
