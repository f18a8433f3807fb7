"""Feedback files processed on arrival in the cloud (cdk/feedback_arrival.py, docs/captures.md): `feedback/`
notifications reach the trainer's queue, and the trainer Lambda (only) may do what flywheel/jobs/feedback_arrival.py
does beyond a retrain: quarantine a bad file and write the batch a file becomes, nothing wider."""

from __future__ import annotations

from fnmatch import fnmatchcase

from cdk_fixtures import InProcessSynth, only, role_statements, s3_grants

from cdk.data_bucket import MODELS_PREFIX, QUARANTINE_PREFIX
from cdk.feedback_arrival import FEEDBACK_BATCH_KEYS

#: The trainer Lambda's grants for feedback files beyond trainer_statements (cdk/grants.py).
LAMBDA_ONLY = {
    ("s3:GetObjectVersion", "BUCKET/feedback/*", ""),
    ("s3:DeleteObject", "BUCKET/feedback/*", ""),
    ("s3:PutObject", "BUCKET/data/*/feedback/*", ""),
}


def _notifications(synth: InProcessSynth) -> list[dict[str, object]]:
    _, custom = only(synth.resources("Custom::S3BucketNotifications"), "DataBucketNotifications")
    configs: list[dict[str, object]] = custom["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    return configs


def test_feedback_files_notify_the_trainers_queue_beside_data(synth: InProcessSynth):
    queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    by_prefix = {c["Filter"]["Key"]["FilterRules"][0]["Value"]: c for c in _notifications(synth)}  # type: ignore[index]
    assert sorted(by_prefix) == ["data/", "feedback/"]
    assert by_prefix["feedback/"] == {
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "feedback/"}]}},
        "QueueArn": {"Fn::GetAtt": [queue_id, "Arn"]},
    }


def test_only_the_lambda_gets_the_feedback_grants(synth: InProcessSynth):
    lambda_grants = s3_grants(role_statements(synth, "TrainerRole"))
    job_grants = s3_grants(role_statements(synth, "TrainerJobJobRole"))
    assert lambda_grants >= LAMBDA_ONLY
    assert not job_grants & LAMBDA_ONLY  # a hand-off retrain never handles a feedback file
    # no write anywhere else under data/ (uploads are the operators'), no delete of a batch written
    puts = {r for a, r, _ in lambda_grants if a == "s3:PutObject"}
    assert {r for r in puts if r.startswith("BUCKET/data/")} == {"BUCKET/data/*/feedback/*"}
    assert not any(fnmatchcase("feedback/m/x.csv", r.removeprefix("BUCKET/")) for r in puts)  # labels: operators'


def test_what_process_writes_is_granted_by_the_trainers_statements(synth: InProcessSynth):
    """flywheel.jobs.feedback_arrival's keys fall under the Lambda's grants: the quarantine copy and report, the live
    quality document, the policy it reads, and the batch."""
    from flywheel.feedback.labelled_batches import batch_key
    from flywheel.feedback.policy import policy_key
    from flywheel.feedback.quality_summary import summary_key
    from flywheel.jobs.feedback_arrival import quarantine_key
    from flywheel.settings import TrainerSettings

    s = TrainerSettings(bucket="flywheel-data")
    grants = s3_grants(role_statements(synth, "TrainerRole"))

    def allowed(action: str, key: str) -> bool:
        return any(a == action and fnmatchcase(key, r.removeprefix("BUCKET/")) for a, r, _ in grants)

    kept = quarantine_key(s, "feedback/churn-eu/week-48.csv")
    assert kept.startswith(QUARANTINE_PREFIX)
    assert allowed("s3:PutObject", kept) and allowed("s3:PutObject", kept + ".error.json")
    assert allowed("s3:GetObjectVersion", "feedback/churn-eu/week-48.csv")  # the copy of the exact version
    assert allowed("s3:DeleteObject", "feedback/churn-eu/week-48.csv")
    assert summary_key("churn-eu").startswith(MODELS_PREFIX) and allowed("s3:PutObject", summary_key("churn-eu"))
    assert allowed("s3:GetObject", policy_key("churn-eu"))
    batch = batch_key(s, "churn-eu", "feedback/churn-eu/week-48.csv")
    assert fnmatchcase(batch, FEEDBACK_BATCH_KEYS) and allowed("s3:PutObject", batch)
    assert allowed("s3:GetObject", "captures/churn-eu/date=2026-01-02/pod-1.parquet")


def test_the_feedback_batch_grant_is_create_only(synth: InProcessSynth):
    """An overwrite of a feedback batch (one a manifest's lineage may name) is denied by IAM, not only by the
    code's If-None-Match: the PutObject grant requires the header."""
    (statement,) = [s for s in role_statements(synth, "TrainerRole")
                    if "s3:PutObject" in str(s["Action"]) and "/data/*/feedback/*" in str(s["Resource"])]  # fmt: skip
    assert statement["Condition"] == {"Null": {"s3:if-none-match": "false"}}
