"""The Flywheel stack: data bucket, upload queue, trainer (Lambda + Batch job), app repository, serving cluster,
observability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from cdk import manifests as m
from cdk.access import UI_AUTH, Access, ui_may_write, ui_rollout_statements
from cdk.access_settings import AccessSettings
from cdk.app_repository import AppRepository
from cdk.cluster_monitoring import ClusterMonitoring
from cdk.data_bucket import DATA_PREFIX, DataBucket
from cdk.exposure import expose
from cdk.feedback_arrival import feedback_arrival_statements, notify_feedback
from cdk.grants import grant, offload_statements, serving_statements, trainer_statements, ui_statements
from cdk.mlflow_mirror import MlflowMirror
from cdk.mlflow_settings import MlflowSettings
from cdk.monitoring_assets import chart_values, dashboards
from cdk.observability import Observability
from cdk.registrations import ModelRegistrations, resolve
from cdk.rollout_judge import RolloutJudge, judge_statements
from cdk.serving_cluster import ServingCluster
from cdk.settings import DeploySettings
from cdk.signing_key import SigningKey
from cdk.stack_outputs import add_outputs
from cdk.trainer import METRICS_NAMESPACE, SERVICE_NAME, TIMEOUT, Trainer, trainer_image
from cdk.trainer_job import TrainerJob
from cdk.upload_queue import UploadQueue

EKS_OVERLAY = "k8s/overlays/eks"
MONITORING_DIR = "monitoring"

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
}


class FlywheelStack(Stack):
    """Everything `cdk deploy` stands up; the constructs are wired and granted here."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        repo_root: Path,
        access: AccessSettings | None = None,
        mlflow: MlflowSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        access = access or AccessSettings()  # internal load balancers, viewer-only UI
        retention = _RETENTION[settings.log_retention_days]
        batch_window = Duration.seconds(settings.trainer_batch_window_seconds)
        # Read and check the schema files first: a bad `models` value fails before anything is built.
        registrations = resolve(settings.registered_models, repo_root=repo_root)

        data = DataBucket(
            self,
            "Data",
            retain=settings.retain_data,
            noncurrent_version_days=settings.noncurrent_version_days,
            quarantine_expiration_days=settings.quarantine_expiration_days,
            capture_retention_days=settings.capture_retention_days,
        )
        models = ModelRegistrations(
            self, "Models", bucket=data.bucket, registrations=registrations, log_retention=retention
        )
        uploads = UploadQueue(self, "Uploads", consumer_timeout=TIMEOUT, batch_window=batch_window)
        data.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(uploads.queue),
            s3.NotificationKeyFilter(prefix=DATA_PREFIX),
        )
        notify_feedback(data.bucket, uploads.queue)  # label files are processed on arrival (docs/captures.md)

        # What the trainer and the serving pods must agree on: one mapping feeds the trainer's environment and
        # the placeholders of the pods' ConfigMap, so the API reads the model the trainer publishes.
        shared_config = {
            "FLYWHEEL_BUCKET": data.bucket.bucket_name,
            "FLYWHEEL_MODEL_NAME": settings.model_name,
            "FLYWHEEL_SCHEMA": settings.schema,
        }

        app_repo = AppRepository(self, "AppImages", retain=settings.retain_data)
        # The trainer signs each manifest with this key, the API pods verify it (who may do what: `allow` below).
        signing = SigningKey(self, "Signing", retain=settings.retain_data)
        signer_config = {"FLYWHEEL_SIGNING_KMS_KEY_ID": signing.key_arn}
        # How an approved version reaches production (docs/rollouts.md): the Batch job decides as the Lambda would.
        rollout_config = {
            "FLYWHEEL_ROLLOUT_MODE": settings.rollout_mode,
            "FLYWHEEL_ROLLOUT_SHARE": str(settings.rollout_share),
        }
        # The MLflow mirror (docs/deploy.md, "MLflow mirror"): nothing of it exists unless a tracking server is set.
        mlflow = mlflow or MlflowSettings()
        mirror = MlflowMirror(self, "MlflowMirror", settings=mlflow, repo_root=repo_root) if mlflow.enabled else None
        mirror_config = mirror.environment if mirror else {}

        serving = ServingCluster(
            self,
            "Serving",
            kubernetes_version=settings.kubernetes_version,
            instance_types=settings.node_instance_types,
            min_size=settings.node_min_size,
            desired_size=settings.node_desired_size,
            max_size=settings.node_max_size,
            disk_size_gib=settings.node_disk_size_gib,
            nat_gateways=settings.nat_gateways,
            endpoint_cidrs=settings.cluster_endpoint_cidrs,
            admin_role_arn=settings.admin_role_arn,
            log_retention=retention,
        )
        grant(serving.app_role, serving_statements(data.bucket))
        # a viewer-only UI (no certificate, so no sign-in) gets no write: nobody can use one there
        grant(serving.ui_role, ui_statements(data.bucket, writes=UI_AUTH[access.exposure] == "oidc"))
        # Sign-in, API keys and who reads which secret (docs/security.md).
        auth = Access(
            self,
            "Access",
            settings=access,
            api_role=serving.app_role,
            ui_role=serving.ui_role,
            retain=settings.retain_data,
        )

        # One image for the trainer Lambda and the Batch job it hands big retrains to: built and pushed once.
        image = trainer_image(self, "TrainerImage", repo_root=repo_root)
        job_timeout = Duration.minutes(settings.trainer_job_timeout_minutes)
        job = TrainerJob(
            self,
            "TrainerJob",
            image=image,
            vpc=serving.vpc,
            environment={
                **shared_config,
                **signer_config,
                **rollout_config,
                **mirror_config,
                "FLYWHEEL_TRAIN_THREADS": "0",  # every vCPU of the job
                "FLYWHEEL_LOCK_TTL_SECONDS": str(int(job_timeout.to_seconds())),
                "FLYWHEEL_RUNS_ON": "batch",
            },
            model_name=settings.model_name,
            vcpu=settings.trainer_job_vcpu,
            memory_mib=settings.trainer_job_memory_mib,
            timeout=job_timeout,
            max_vcpus=settings.trainer_job_max_vcpus,
            log_retention=retention,
        )
        grant(job.job_role, trainer_statements(data.bucket))  # exactly the Lambda's S3 access

        trainer = Trainer(
            self,
            "Trainer",
            image=image,
            queue=uploads.queue,
            environment={
                **shared_config,
                **signer_config,
                **rollout_config,
                **mirror_config,
                "FLYWHEEL_LOCK_TTL_SECONDS": str(settings.trainer_lock_ttl_seconds),
                "FLYWHEEL_OFFLOAD": "batch",
                "FLYWHEEL_OFFLOAD_JOB_QUEUE": job.job_queue.job_queue_arn,
                "FLYWHEEL_OFFLOAD_JOB_DEFINITION": job.job_definition.job_definition_arn,
                "FLYWHEEL_QUEUE_URL": uploads.queue.queue_url,  # delayed re-sends: lock contention, captures in flight
                # the lock claimed for a hand-off outlives the job's queueing and its timeout, never much more
                "FLYWHEEL_OFFLOAD_LOCK_SECONDS": str(settings.trainer_job_timeout_minutes * 60 + 1800),
                "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO" if settings.is_prod else "DEBUG",
            },
            memory_mib=settings.trainer_memory_mib,
            ephemeral_storage_mib=settings.trainer_ephemeral_storage_mib,
            batch_size=settings.trainer_batch_size,
            batch_window=batch_window,
            max_concurrency=settings.trainer_max_concurrency,
            reserved_concurrency=settings.trainer_reserved_concurrency,
            log_retention=retention,
        )
        grant(trainer.function, trainer_statements(data.bucket) + feedback_arrival_statements(data.bucket))
        grant(
            trainer.function,
            offload_statements(
                job_queue_arn=job.job_queue.job_queue_arn,
                job_definition_arns=job.job_definition_arns,
                upload_queue=uploads.queue,
            ),
        )

        # the UI checks signatures too (its Models page shows valid/INVALID as the replicas decide)
        # the trainers verify too: production's signature is checked before the gate reads (unpickles) that version
        signing.allow(
            signers=[trainer.role, job.job_role],
            verifiers=[serving.app_role, serving.ui_role, trainer.role, job.job_role],
        )

        monitoring_dir = repo_root / MONITORING_DIR
        monitoring = ClusterMonitoring(
            self,
            "Monitoring",
            cluster=serving.cluster,
            chart_version=settings.kube_prometheus_stack_version,
            values=chart_values(monitoring_dir),
            dashboards=dashboards(monitoring_dir),
        )

        rendered = m.render_overlay(repo_root / EKS_OVERLAY)
        m.require_objects(rendered)
        substituted = m.substitute(
            rendered,
            image=app_repo.image_uri(settings.image_tag),
            config={
                **shared_config,
                "FLYWHEEL_SERVE_MODELS": ",".join(settings.serve_models),  # "" = every registered model
                "FLYWHEEL_VERIFY_KMS_KEY_ID": signing.key_arn,  # the API pods verify manifests with it
                "AWS_REGION": Aws.REGION,
                **auth.config,
            },
        )
        app_manifests = expose(substituted, access)  # TLS, allow-listed or internal load balancers
        app = serving.deploy_app(app_manifests)
        if any(str(doc.get("apiVersion", "")).startswith("monitoring.coreos.com/") for doc in app_manifests):
            app.node.add_dependency(monitoring.chart)  # ServiceMonitor & co. need the chart's CRDs first

        observability = Observability(
            self,
            "Observability",
            function=trainer.function,
            timeout=TIMEOUT,
            queue=uploads.queue,
            dead_letter_queue=uploads.dead_letter_queue,
            alarm_email=settings.alarm_email,
            mlflow_mirror=mirror is not None,
        )
        # Rollouts (docs/rollouts.md): every minute, judge the running ones; the same image as the trainer.
        judge = RolloutJudge(
            self,
            "RolloutJudge",
            image=image,
            environment={
                **shared_config,
                **mirror_config,  # the judge moves MLflow's aliases after its decisions
                "POWERTOOLS_LOG_LEVEL": "INFO" if settings.is_prod else "DEBUG",
            },
            alarm_topic=observability.topic,
            log_retention=retention,
        )
        grant(judge.role, judge_statements(data.bucket))
        if mirror is not None:  # the three that mirror: its secret, or its SageMaker server and artifact store
            mirror.allow(
                [trainer.role, job.job_role, judge.role],
                before=[trainer.function, job.job_definition, judge.function],
            )
        # An operator signed in to the UI promotes or aborts a rollout too: the rollout state and the candidate's
        # history events. A viewer-only UI gets neither (no write at all).
        ui_writes = ui_may_write(access.exposure)
        grant(serving.ui_role, ui_rollout_statements(data.bucket, writes=ui_writes))
        # Only the roles that may sign may publish: nobody else writes or deletes a model version. The judge, and
        # the UI with sign-in, may only add history events there: the bucket policy denies them the version's own
        # files and every delete, and their IAM allows no other key under versions/.
        data.reserve_versions(
            [trainer.role, job.job_role], history_writers=[judge.role, *([serving.ui_role] if ui_writes else [])]
        )

        self.data = data
        self.models = models
        self.uploads = uploads
        self.trainer = trainer
        self.trainer_job = job
        self.rollout_judge = judge
        self.app_repository = app_repo
        self.signing = signing
        self.serving = serving
        self.access = auth
        self.monitoring = monitoring
        self.observability = observability
        self.app_manifests = app
        add_outputs(self, access=access, rendered=rendered, data=data, uploads=uploads, trainer=trainer, job=job,
                    app_repository=app_repo, serving=serving, app=app, auth=auth, observability=observability,
                    signing=signing)  # fmt: skip
