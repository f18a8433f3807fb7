"""The live-quality alarm: one for every model, on the count of versions below their holdout score that the
trainer emits (lambdas/trainer/quality_metrics.py), two breaching hourly periods, missing hours ignored."""

from __future__ import annotations

from cdk_fixtures import InProcessSynth, joined, only

from cdk.trainer import METRICS_NAMESPACE, SERVICE_NAME


def test_the_live_quality_alarm_watches_the_trainers_count_and_goes_to_the_alarm_topic(synth: InProcessSynth):
    topic_id, _ = only(synth.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    _, alarm = only(synth.resources("AWS::CloudWatch::Alarm"), "ObservabilityLiveQualityBelowHoldout")
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (METRICS_NAMESPACE, "LiveQualityBelowHoldout")
    # the same dimensions Powertools gives the dimensionless count (service only): one alarm covers every model
    assert props["Dimensions"] == [{"Name": "service", "Value": SERVICE_NAME}]
    assert (props["Statistic"], props["Period"]) == ("Maximum", 3600)
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (2, 2)
    # labels arrive in bursts: an hour without a figure neither breaches nor ends the alarm
    assert props["TreatMissingData"] == "ignore"
    assert props["AlarmActions"] == props["OKActions"] == [{"Ref": topic_id}]
    assert "runbook.md#flywheellivequalitybelowholdout" in joined(props["AlarmDescription"])


def test_the_trainer_dashboard_shows_the_count_and_the_alarm(synth: InProcessSynth):
    alarm_id, _ = only(synth.resources("AWS::CloudWatch::Alarm"), "ObservabilityLiveQualityBelowHoldout")
    _, dashboard = only(synth.resources("AWS::CloudWatch::Dashboard"), "ObservabilityDashboard")
    body = joined(dashboard["Properties"]["DashboardBody"])
    assert '"LiveQualityBelowHoldout"' in body
    assert alarm_id in body  # in the alarm status widget
