"""The rollout judge: a Lambda run every minute by an EventBridge schedule, from the trainer's image.

Each run is one judge pass over every model (flywheel/jobs/judge_pass.py): read a running rollout and the pods'
statistics, judge, record the decision on rollout.json, move the production alias, append to the candidate's
history. Every write is a compare-and-swap or create-only, so overlapping runs are safe; reserved concurrency
of 1 keeps them from happening anyway, and a tick that cannot run within a minute is dropped (the next one
comes). Its S3 access (`judge_statements`) is granted in the Stack, like every other role's.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.data_bucket import MODELS_PREFIX, VERSIONS_KEYS
from cdk.grants import ANY_ALIAS_KEY, model_reader_statements
from cdk.trainer import METRICS_NAMESPACE, lambda_logs_and_role

SERVICE_NAME = "flywheel-judge"
#: Appended to the image's ENTRYPOINT (`python -m`, lambdas/trainer/Dockerfile), as the trainer's own CMD is.
COMMAND = ["awslambdaric", "lambdas.judge.handler.handler"]
EVERY = Duration.minutes(1)  # EventBridge renders it as rate(1 minute)
TIMEOUT = Duration.seconds(60)
MEMORY_MIB = 512
PERIOD = Duration.minutes(5)
#: Failures in one PERIOD (five runs) before an alarm: one failed run is retried by the next a minute later.
FAILURES_TO_ALARM = 3

#: The rollout state of any model (flywheel.release.rollout_state.rollout_key).
ROLLOUT_KEYS = f"{MODELS_PREFIX}*/rollout.json"
#: The create-only history events of any version (flywheel.registry.history.HISTORY_DIR): never a version's own files.
HISTORY_KEYS = f"{VERSIONS_KEYS}/history/*"
#: Every key the judge may write: nothing else under models/ (no manifest, model, registration or stats).
WRITABLE_KEYS = (ROLLOUT_KEYS, ANY_ALIAS_KEY, HISTORY_KEYS)


def judge_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """Read and list `models/` (as the API pods do: rollouts, pods' statistics, aliases, manifests,
    registrations); write only the rollout state, the production alias and versions' history events. No
    delete anywhere, no other prefix."""
    return [
        *model_reader_statements(bucket),
        *(iam.PolicyStatement(actions=["s3:PutObject"], resources=[bucket.arn_for_objects(k)]) for k in WRITABLE_KEYS),
    ]


class RolloutJudge(Construct):
    """The judge Lambda (trainer image, judge CMD), its minute schedule, its log group and its alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        image: ecr_assets.DockerImageAsset,
        environment: dict[str, str],
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        # as the trainer's: logs to this group only; S3 is granted in the Stack (judge_statements)
        self.log_group, self.role = lambda_logs_and_role(self, "Flywheel rollout judge Lambda", log_retention)
        code = lambda_.DockerImageCode.from_ecr(image.repository, tag_or_digest=image.image_tag, cmd=COMMAND)
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=code,
            description="Flywheel rollout judge: judge running rollouts on the pods' statistics, promote or abort",
            architecture=lambda_.Architecture.X86_64,
            timeout=TIMEOUT,
            memory_size=MEMORY_MIB,
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            },
            log_group=self.log_group,
            role=self.role,
            reserved_concurrent_executions=1,  # one pass at a time (they are CAS-safe, but need not race)
            # a tick throttled behind a running pass is not kept: the next minute's tick replaces it
            max_event_age=Duration.minutes(1),
            retry_attempts=0,
        )
        self.rule = events.Rule(
            self,
            "Schedule",
            description="Run the Flywheel rollout judge every minute",
            schedule=events.Schedule.rate(EVERY),
            targets=[targets.LambdaFunction(self.function)],
        )

        def alarm(name: str, description: str, metric: cw.IMetric) -> cw.Alarm:
            """As the trainer's alarms (cdk/observability.py): to the same topic; no data is not an alarm."""
            made = cw.Alarm(
                self,
                name,
                alarm_description=description,
                metric=metric,
                threshold=FAILURES_TO_ALARM,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            made.add_alarm_action(cw_actions.SnsAction(alarm_topic))
            made.add_ok_action(cw_actions.SnsAction(alarm_topic))
            return made

        self.alarms = [
            alarm(
                "Errors",
                f"The rollout judge Lambda failed {FAILURES_TO_ALARM}+ times in 5 minutes (no model was judged).",
                self.function.metric_errors(statistic="Sum", period=PERIOD),
            ),
            alarm(
                "PassErrors",
                f"{FAILURES_TO_ALARM}+ judge passes of a model failed in 5 minutes (JudgeErrors; the logs name it).",
                cw.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name="JudgeErrors",
                    dimensions_map={"service": SERVICE_NAME},
                    statistic="Sum",
                    period=PERIOD,
                ),
            ),
        ]
