"""The rollout judge Lambda: the trainer's image with the judge's CMD, every minute, one at a time, and an S3
grant that writes only the rollout state, the production alias and versions' history events."""

from __future__ import annotations

import importlib
from fnmatch import fnmatchcase
from typing import Any

from cdk_fixtures import InProcessSynth, actions, joined, only, role_statements, s3_grants

from cdk.rollout_judge import COMMAND, WRITABLE_KEYS

BUCKET = "BUCKET"


def _function(synth: InProcessSynth, prefix: str = "RolloutJudgeFunction") -> tuple[str, dict[str, Any]]:
    return only(synth.resources("AWS::Lambda::Function"), prefix)


def test_the_judge_runs_the_trainer_image_with_its_own_command(synth: InProcessSynth):
    _, judge = _function(synth)
    _, trainer = _function(synth, "TrainerFunction")
    props = judge["Properties"]
    assert props["PackageType"] == "Image"
    assert props["Code"]["ImageUri"] == trainer["Properties"]["Code"]["ImageUri"]  # one asset, built once
    # the image's ENTRYPOINT is `python -m` (lambdas/trainer/Dockerfile); the trainer keeps the image's CMD
    assert props["ImageConfig"] == {"Command": ["awslambdaric", "lambdas.judge.handler.handler"]}
    module, _, name = COMMAND[1].rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))  # the CMD names a real handler
    assert "ImageConfig" not in trainer["Properties"]
    assert (props["MemorySize"], props["Timeout"], props["ReservedConcurrentExecutions"]) == (512, 60, 1)


def test_the_judge_reads_its_settings_from_the_environment(synth: InProcessSynth):
    _, judge = _function(synth)
    env = judge["Properties"]["Environment"]["Variables"]
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    assert env["FLYWHEEL_BUCKET"] == {"Ref": bucket_id}
    assert (env["FLYWHEEL_MODEL_NAME"], env["FLYWHEEL_SCHEMA"]) == ("savings", "savings")
    assert (env["POWERTOOLS_SERVICE_NAME"], env["POWERTOOLS_METRICS_NAMESPACE"]) == ("flywheel-judge", "Flywheel")
    assert not {k for k in env if "SIGNING" in k or "OFFLOAD" in k}  # the judge signs nothing, hands off nothing


def test_a_rule_runs_it_every_minute_and_a_late_tick_is_dropped(synth: InProcessSynth):
    function_id, _ = _function(synth)
    _, rule = only(synth.resources("AWS::Events::Rule"), "RolloutJudgeSchedule")
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Properties"]["State"] == "ENABLED"
    assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Fn::GetAtt": [function_id, "Arn"]}]
    permissions = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert [p["Principal"] for p in permissions] == ["events.amazonaws.com"]
    _, invoke = only(synth.resources("AWS::Lambda::EventInvokeConfig"), "RolloutJudgeFunction")
    assert (invoke["Properties"]["MaximumEventAgeInSeconds"], invoke["Properties"]["MaximumRetryAttempts"]) == (60, 0)


def test_s3_access_is_read_models_and_write_three_key_patterns(synth: InProcessSynth):
    statements = role_statements(synth, "RolloutJudgeRole")
    assert s3_grants(statements) == {
        ("s3:GetObject", f"{BUCKET}/models/*", ""),
        ("s3:ListBucket", BUCKET, "models/*"),
        ("s3:PutObject", f"{BUCKET}/models/*/rollout.json", ""),
        ("s3:PutObject", f"{BUCKET}/models/*/aliases/production.json", ""),
        ("s3:PutObject", f"{BUCKET}/models/*/versions/*/history/*", ""),
    }
    every = [a for s in statements for a in actions(s)]
    assert not [a for a in every if "*" in a], "no wildcard actions"
    assert {a.split(":")[0] for a in every} == {"s3", "logs"}  # no X-Ray, KMS, SQS, Batch
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" and "NotResource" not in s for s in statements)
    logs_id, _ = only(synth.resources("AWS::Logs::LogGroup"), "RolloutJudgeLogs")
    (log_statement,) = [s for s in statements if actions(s)[0].startswith("logs:")]
    assert log_statement["Resource"] == {"Fn::GetAtt": [logs_id, "Arn"]}


def test_the_writable_patterns_match_what_the_core_writes_and_no_version_file():
    """IAM's `*` matches like fnmatch's, `/` included."""
    from flywheel.registry.history import HISTORY_DIR
    from flywheel.registry.store import Registry
    from flywheel.release.rollout_state import rollout_key

    def writable(key: str) -> bool:
        return any(fnmatchcase(key, pattern) for pattern in WRITABLE_KEYS)

    for name in ("savings", "churn-2"):
        registry = Registry(None, "bucket", name)
        for key in (
            rollout_key(registry),
            registry.alias_key,
            registry.version_key(7, HISTORY_DIR + "20260101T000000.000000Z-rollout-promoted-0a1b2c3d.json"),
        ):
            assert writable(key), key
        for key in (
            *(registry.version_key(7, f) for f in ("model.joblib", "manifest.json", "manifest.sig")),
            f"models/{name}/schema.json",
            f"models/{name}/rollout-policy.json",
            f"models/{name}/lock.json",
            f"models/{name}/rollouts/v7-20260101000000/stats/pod-1.json",
            f"data/{name}/batch.csv",
        ):
            assert not writable(key), key


def test_the_bucket_policy_lets_the_judge_append_history(synth: InProcessSynth):
    """The deny on models/*/versions/* exempts the judge's role, whose IAM allows only history/* there."""
    role_id, _ = only(synth.resources("AWS::IAM::Role"), "RolloutJudgeRole")
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    policies = synth.resources("AWS::S3::BucketPolicy").values()
    (policy,) = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s.get("Sid") == "OnlyTheTrainerWritesModelVersions"]
    assert {"Fn::GetAtt": [role_id, "Arn"]} in deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]


def test_alarms_on_failed_runs_and_failed_passes_go_to_the_alarm_topic(synth: InProcessSynth):
    function_id, _ = _function(synth)
    topic_id, _ = only(synth.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    alarms = {
        k: v["Properties"] for k, v in synth.resources("AWS::CloudWatch::Alarm").items() if k.startswith("RolloutJudge")
    }
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()}
    assert set(by_metric) == {("AWS/Lambda", "Errors"), ("Flywheel", "JudgeErrors")}
    assert by_metric[("AWS/Lambda", "Errors")]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": function_id}}
    ]
    assert by_metric[("Flywheel", "JudgeErrors")]["Dimensions"] == [{"Name": "service", "Value": "flywheel-judge"}]
    for alarm in alarms.values():
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 300, 3)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "judge" in joined(alarm["AlarmDescription"])
