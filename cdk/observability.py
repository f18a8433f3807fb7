"""CloudWatch for the trainer: one dashboard, alarms on errors, DLQ depth and near-timeout runs, an SNS topic."""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.rollout_judge import SERVICE_NAME as JUDGE_SERVICE
from cdk.trainer import METRICS_NAMESPACE, SERVICE_NAME

PERIOD = Duration.minutes(5)
#: Live quality (docs/captures.md, "Live quality as metrics and alerts"): the judge counts, every minute, the
#: models whose production version is short; hourly periods, two of them short throughout.
LIVE_QUALITY_PERIOD = Duration.hours(1)
LIVE_QUALITY_PERIODS = 2
#: Alarm when a run's duration passes this share of the timeout: the next bigger batch may not finish.
NEAR_TIMEOUT_FRACTION = 0.8
#: The MLflow mirror (docs/mlflow.md), when it is on: failed passes of the trainer and the judge in this many of the
#: last MIRROR_WINDOW_PERIODS five-minute periods. One failure is repaired by the next event; failures that keep
#: coming are MLflow down, refusing or the credentials wrong. Mirror passes are as sparse as retrains and
#: decisions, so the periods need not be consecutive (three in a row would never come with a retrain every 10 min).
MIRROR_FAILED_PERIODS = 3
MIRROR_WINDOW_PERIODS = 12


def trainer_metric(name: str, statistic: str) -> cw.Metric:
    """A Powertools (EMF) metric of the trainer; names and units are in docs/metrics.md."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE_NAME},
        statistic=statistic,
        period=PERIOD,
    )


def judge_quality_metric(statistic: str) -> cw.Metric:
    """The judge's hourly count of models whose production version is short on live quality (docs/metrics.md)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name="LiveQualityBelowHoldout",
        dimensions_map={"service": JUDGE_SERVICE},
        statistic=statistic,
        period=LIVE_QUALITY_PERIOD,
    )


class Observability(Construct):
    """Dashboard and alarms for the trainer and its queues; alarm actions go to an encrypted SNS topic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.IFunction,
        timeout: Duration,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        alarm_email: str | None,
        mlflow_mirror: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True, description="Flywheel alarm topic")
        # CloudWatch alarms publish to an encrypted topic only if the key lets them.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        action = cw_actions.SnsAction(self.topic)

        duration = function.metric_duration(statistic="Maximum", period=PERIOD)
        dlq_depth = dead_letter_queue.metric_approximate_number_of_messages_visible(statistic="Maximum", period=PERIOD)

        def make_alarm(name: str, description: str, metric: cw.IMetric, threshold: float) -> cw.Alarm:
            """At or over the threshold in one period; no data is not an alarm."""
            return cw.Alarm(
                self,
                name,
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )

        self.alarms = [
            make_alarm(
                "TrainerErrors",
                "The trainer Lambda failed (an exception, a timeout or an out-of-memory).",
                function.metric_errors(statistic="Sum", period=PERIOD),
                1,
            ),
            make_alarm(
                "DeadLetters",
                "Upload notifications reached the dead-letter queue: their batches were not trained.",
                dlq_depth,
                1,
            ),
            make_alarm(
                "TrainerNearTimeout",
                f"A trainer run took more than {int(NEAR_TIMEOUT_FRACTION * 100)}% of its "
                f"{int(timeout.to_minutes())}-minute timeout.",
                duration,
                timeout.to_milliseconds() * NEAR_TIMEOUT_FRACTION,
            ),
        ]
        self.alarms.append(
            make_alarm(
                "ProductionUnverified",
                "A retrain found that the production version's signature does not verify (unsigned, forged or "
                "altered): nothing of it was loaded, the gate compared the candidate with the baseline only. "
                "See docs/runbook.md, ProductionUnverified.",
                trainer_metric("ProductionUnverified", "Sum"),
                1,
            )
        )
        self.alarms.append(live_quality_alarm(self))
        if mlflow_mirror:
            self.alarms.append(mlflow_mirror_alarm(self))
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)

        self.dashboard_name = f"{Stack.of(self).stack_name}-trainer"
        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=self.dashboard_name, default_interval=Duration.days(1)
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Invocations, errors, throttles",
                left=[
                    function.metric_invocations(statistic="Sum", period=PERIOD),
                    function.metric_errors(statistic="Sum", period=PERIOD),
                    function.metric_throttles(statistic="Sum", period=PERIOD),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Duration (ms)",
                left=[
                    duration,
                    function.metric_duration(statistic="p50", period=PERIOD),
                ],
                left_annotations=[cw.HorizontalAnnotation(value=timeout.to_milliseconds(), label="timeout")],
                width=8,
            ),
            cw.GraphWidget(
                title="Queues",
                left=[
                    queue.metric_approximate_number_of_messages_visible(statistic="Maximum", period=PERIOD),
                    queue.metric_approximate_age_of_oldest_message(statistic="Maximum", period=PERIOD),
                ],
                right=[dlq_depth],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Batches",
                left=[trainer_metric("BatchRows", "Sum")],
                right=[trainer_metric("QuarantinedBatches", "Sum")],
                width=8,
            ),
            cw.GraphWidget(
                title="Gate decisions",
                left=[trainer_metric("Promoted", "Sum"), trainer_metric("Rejected", "Sum")],
                right=[trainer_metric("TrainingDuration", "Maximum")],
                width=8,
            ),
            cw.GraphWidget(
                title="Holdout score (candidate vs production)",
                left=[trainer_metric("HoldoutScore", "Average"), trainer_metric("ProductionHoldoutScore", "Average")],
                width=8,
            ),
            cw.GraphWidget(
                title="Live quality: versions below their holdout score",
                left=[judge_quality_metric("Maximum")],
                width=8,
            ),
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=16),
        )

    @property
    def dashboard_url(self) -> str:
        """The dashboard's address in the CloudWatch console (a stack output)."""
        return Fn.join("", ["https://", Aws.REGION, ".console.aws.amazon.com/cloudwatch/home?region=", Aws.REGION,
                            "#dashboards/dashboard/", self.dashboard_name])  # fmt: skip


def live_quality_alarm(scope: Construct) -> cw.Alarm:
    """One alarm for every model: some model's production version has live quality below its holdout score
    beyond the tolerance with enough labels, at every minute of 2 consecutive hours (not necessarily the same
    model). The scheduled judge counts those models every minute from the published documents
    (lambdas/judge/handler.py), so the hour's Minimum is 1 only when a shortfall lasted the whole hour, however
    rarely labels arrive; a model's figures never clear another's. Missing data (the judge not running) is
    ignored: it neither breaches nor ends an alarm."""
    return cw.Alarm(
        scope,
        "LiveQualityBelowHoldout",
        alarm_description="A served model's live quality is below the gate's holdout score by more than the "
        "tolerance (0.05) with at least 100 labelled predictions, in two consecutive hourly figures. "
        "Runbook: docs/runbook.md#flywheellivequalitybelowholdout",
        metric=judge_quality_metric("Minimum"),
        threshold=1,
        evaluation_periods=LIVE_QUALITY_PERIODS,
        datapoints_to_alarm=LIVE_QUALITY_PERIODS,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cw.TreatMissingData.IGNORE,
    )


def mlflow_mirror_alarm(scope: Construct) -> cw.Alarm:
    """MlflowMirrorFailed of the trainer and the judge together (lambdas/trainer/handler.py, lambdas/judge/handler.py)
    in MIRROR_FAILED_PERIODS of the last MIRROR_WINDOW_PERIODS periods. The judge counts every minute (0 without a
    failure) and the trainer every run; FILL makes a period where one of them did not run count as 0 for it. The Batch
    job counts nothing (its log says `mlflow: failed ...`). Made only when the mirror is on."""
    failed = {
        name: cw.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="MlflowMirrorFailed",
            dimensions_map={"service": service},
            statistic="Sum",
            period=PERIOD,
        )
        for name, service in (("trainer", SERVICE_NAME), ("judge", JUDGE_SERVICE))
    }
    return cw.Alarm(
        scope,
        "MlflowMirrorFailed",
        alarm_description=f"The MLflow mirror failed in {MIRROR_FAILED_PERIODS} of the last {MIRROR_WINDOW_PERIODS} "
        "5-minute periods (trainer or judge): MLflow is behind Flywheel (nothing else is affected). "
        "Runbook: docs/runbook.md#mlflowmirrorfailed",
        metric=cw.MathExpression(
            expression="FILL(trainer, 0) + FILL(judge, 0)",
            using_metrics=dict(failed),
            period=PERIOD,
            label="MLflow mirror passes failed",
        ),
        threshold=1,
        evaluation_periods=MIRROR_WINDOW_PERIODS,
        datapoints_to_alarm=MIRROR_FAILED_PERIODS,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
    )
