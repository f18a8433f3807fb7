"""The live-quality alarm: one for every model, on the count of models whose production version is below its
holdout score that the judge emits every minute (lambdas/judge/handler.py): short all through two consecutive
hours (the hour's Minimum), missing hours ignored."""

from __future__ import annotations

from cdk_fixtures import InProcessSynth, joined, only

from cdk.rollout_judge import SERVICE_NAME
from cdk.trainer import METRICS_NAMESPACE


def test_the_live_quality_alarm_watches_the_judges_count_and_goes_to_the_alarm_topic(synth: InProcessSynth):
    topic_id, _ = only(synth.resources("AWS::SNS::Topic"), "ObservabilityAlarmTopic")
    _, alarm = only(synth.resources("AWS::CloudWatch::Alarm"), "ObservabilityLiveQualityBelowHoldout")
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (METRICS_NAMESPACE, "LiveQualityBelowHoldout")
    # the dimensions Powertools gives the judge's count (service only): one alarm covers every model
    assert props["Dimensions"] == [{"Name": "service", "Value": SERVICE_NAME}]
    assert (props["Statistic"], props["Period"]) == ("Minimum", 3600)  # short every minute of the hour
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (2, 2)
    # the judge not running: an hour without a figure neither breaches nor ends the alarm
    assert props["TreatMissingData"] == "ignore"
    assert props["AlarmActions"] == props["OKActions"] == [{"Ref": topic_id}]
    assert "runbook.md#flywheellivequalitybelowholdout" in joined(props["AlarmDescription"])


def test_the_trainer_dashboard_shows_the_count_and_the_alarm(synth: InProcessSynth):
    alarm_id, _ = only(synth.resources("AWS::CloudWatch::Alarm"), "ObservabilityLiveQualityBelowHoldout")
    _, dashboard = only(synth.resources("AWS::CloudWatch::Dashboard"), "ObservabilityDashboard")
    body = joined(dashboard["Properties"]["DashboardBody"])
    assert '"LiveQualityBelowHoldout"' in body
    assert alarm_id in body  # in the alarm status widget
