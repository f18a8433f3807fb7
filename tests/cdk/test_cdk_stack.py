"""The stack's data path and operations: S3, SQS, ECR, CloudWatch (properties, not counts)."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match, Template
from cdk_fixtures import InProcessSynth, joined, only

from cdk.settings import DeploySettings

DEFAULTS = DeploySettings()

# --- S3 -------------------------------------------------------------------------------------------------


def test_data_bucket_private_encrypted_versioned_logged_and_retained(synth: InProcessSynth, template: Template):
    bucket_id, bucket = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                    "LoggingConfiguration": Match.object_like({"LogFilePrefix": "flywheel/"}),
                }
            ),
        },
    )
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket_id.startswith("DataBucket")


def test_lifecycle_expires_noncurrent_versions_and_quarantine(synth: InProcessSynth):
    _, bucket = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    noncurrent = rules["expire-noncurrent-versions"]
    assert noncurrent["Status"] == "Enabled"
    assert noncurrent["NoncurrentVersionExpiration"] == {"NoncurrentDays": DEFAULTS.noncurrent_version_days}
    assert noncurrent["ExpiredObjectDeleteMarker"] is True
    assert noncurrent["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert "Prefix" not in noncurrent
    quarantine = rules["expire-quarantine"]
    assert quarantine["Prefix"] == "quarantine/"
    assert quarantine["ExpirationInDays"] == DEFAULTS.quarantine_expiration_days


def test_both_buckets_deny_plain_http(synth: InProcessSynth, template: Template):
    for bucket_id in synth.resources("AWS::S3::Bucket"):
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": bucket_id},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_uploads_under_data_notify_the_queue(synth: InProcessSynth, template: Template):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": {"Ref": bucket_id},
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    {
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                        "QueueArn": {"Fn::GetAtt": [queue_id, "Arn"]},
                    }
                    for prefix in ("data/", "feedback/")  # feedback/: tests/cdk/test_cdk_feedback_arrival.py
                ]
            },
        },
    )


# --- SQS -------------------------------------------------------------------------------------------------


def test_queue_encrypted_with_dlq_and_visibility_beyond_a_run(synth: InProcessSynth):
    queues = synth.resources("AWS::SQS::Queue")
    queue_id, queue = only(queues, "UploadsQueue")
    dlq_id, dlq = only(queues, "UploadsDeadLetterQueue")
    props = queue["Properties"]
    assert props["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    # A message must stay invisible for a whole 15-minute run plus the batching window.
    assert props["VisibilityTimeout"] >= 900 + DEFAULTS.trainer_batch_window_seconds
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue_id != dlq_id


def test_queues_deny_plain_http(synth: InProcessSynth, template: Template):
    for queue_id in synth.resources("AWS::SQS::Queue"):
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                    )
                },
            },
        )


# --- ECR -------------------------------------------------------------------------------------------------


def test_app_repository_scans_immutable_tags_lifecycle(synth: InProcessSynth, template: Template):
    template.has_resource(
        "AWS::ECR::Repository",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "ImageTagMutability": "IMMUTABLE",
                }
            ),
        },
    )
    _, repo = only(synth.resources("AWS::ECR::Repository"), "AppImages")
    rules = json.loads(repo["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert [(r["selection"]["tagStatus"], r["selection"]["countType"]) for r in rules] == [
        ("untagged", "sinceImagePushed"),
        ("any", "imageCountMoreThan"),
    ]


# --- CloudWatch ------------------------------------------------------------------------------------------


def test_alarms_on_errors_dlq_depth_near_timeout_and_unverified_production_go_to_the_topic(synth: InProcessSynth):
    topic_id, topic = only(synth.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    assert "KmsMasterKeyId" in topic["Properties"]
    alarms = {
        k.removeprefix("Observability"): v["Properties"]
        for k, v in synth.resources("AWS::CloudWatch::Alarm").items()
        # the trainer's; the rollout judge's are in test_cdk_judge.py, live quality's in test_cdk_live_quality_alarm.py
        if k.startswith("Observability") and not k.startswith("ObservabilityLiveQuality")
    }
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()}
    errors = by_metric[("AWS/Lambda", "Errors")]
    assert (errors["Statistic"], errors["Threshold"]) == ("Sum", 1)
    dlq = by_metric[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    dlq_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsDeadLetterQueue")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    duration = by_metric[("AWS/Lambda", "Duration")]
    assert (duration["Statistic"], duration["Threshold"]) == ("Maximum", 0.8 * 900 * 1000)
    # a retrain that found production's signature not verifying (the handler's Powertools metric)
    unverified = by_metric[("Flywheel", "ProductionUnverified")]
    assert (unverified["Statistic"], unverified["Threshold"]) == ("Sum", 1)
    assert unverified["Dimensions"] == [{"Name": "service", "Value": "flywheel-trainer"}]
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
    assert len(alarms) == 4
    assert not synth.resources("AWS::SNS::Subscription")  # no alarmEmail by default


def test_dashboard_shows_lambda_queue_and_powertools_metrics(synth: InProcessSynth):
    _, dashboard = only(synth.resources("AWS::CloudWatch::Dashboard"), "ObservabilityDashboard")
    body = joined(dashboard["Properties"]["DashboardBody"])
    for metric in ("Invocations", "Errors", "Duration", "Throttles", "ApproximateNumberOfMessagesVisible"):
        assert f'"{metric}"' in body, metric
    for metric in (
        "BatchRows",
        "QuarantinedBatches",
        "TrainingDuration",
        "Promoted",
        "Rejected",
        "HoldoutScore",
        "ProductionHoldoutScore",
    ):
        assert f'"Flywheel","{metric}","service","flywheel-trainer"' in body, metric
    assert dashboard["Properties"]["DashboardName"] == "Flywheel-dev-trainer"


def test_outputs_say_where_everything_is(synth: InProcessSynth):
    outputs = synth.template["Outputs"]
    assert set(outputs) >= {
        "BucketName",
        "UploadQueueUrl",
        "DeadLetterQueueUrl",
        "ClusterName",
        "KubeconfigCommand",
        "ApiUrl",
        "UiUrl",
        "GrafanaCommand",
        "DashboardUrl",
        "AppRepositoryUri",
        "AlarmTopicArn",
    }
    assert joined(outputs["ApiUrl"]["Value"]).endswith(":8080")
    assert "#dashboards/dashboard/Flywheel-dev-trainer" in joined(outputs["DashboardUrl"]["Value"])
    assert outputs["GrafanaCommand"]["Value"].startswith("kubectl -n monitoring port-forward svc/")
