"""What `cdk deploy` prints for the Flywheel stack: where to upload, the queues, the trainer, the cluster and how to
reach it, the endpoints (cdk/exposure.py), sign-in (cdk/access.py), Grafana, the alarms and the signing key."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Fn, Stack
from constructs import IConstruct

from cdk import manifests as m
from cdk.access import Access
from cdk.access_settings import AccessSettings
from cdk.app_repository import AppRepository
from cdk.cluster_monitoring import NAMESPACE as MONITORING_NAMESPACE
from cdk.cluster_monitoring import RELEASE
from cdk.data_bucket import DataBucket
from cdk.exposure import endpoint_outputs
from cdk.observability import Observability
from cdk.serving_cluster import ServingCluster
from cdk.signing_key import SigningKey
from cdk.trainer import Trainer
from cdk.trainer_job import TrainerJob
from cdk.upload_queue import UploadQueue


def add_outputs(
    stack: Stack,
    *,
    access: AccessSettings,
    rendered: list[m.Manifest],
    data: DataBucket,
    uploads: UploadQueue,
    trainer: Trainer,
    job: TrainerJob,
    app_repository: AppRepository,
    serving: ServingCluster,
    app: IConstruct,
    auth: Access,
    observability: Observability,
    signing: SigningKey,
) -> None:
    """The stack's CfnOutputs. `rendered`: the app's manifests as kustomize rendered them (the services' ports);
    `app`: the applied manifests, which the load balancers' addresses are read after."""
    api_host = serving.load_balancer_host("ApiAddress", service=m.API_SERVICE, after=app)
    ui_host = serving.load_balancer_host("UiAddress", service=m.UI_SERVICE, after=app)
    api_port = m.service_port(rendered, m.API_SERVICE)
    ui_port = m.service_port(rendered, m.UI_SERVICE)
    cluster_name = serving.cluster.cluster_name
    outputs = {
        "BucketName": (data.bucket.bucket_name, "upload CSV batches under data/"),
        "UploadQueueUrl": (uploads.queue.queue_url, "S3 data/ notifications for the trainer"),
        "DeadLetterQueueUrl": (uploads.dead_letter_queue.queue_url, "notifications the trainer gave up on"),
        "TrainerFunctionName": (trainer.function.function_name, "the trainer Lambda"),
        "AppRepositoryUri": (
            app_repository.repository.repository_uri,
            "push the API/UI image here, tag = git sha",
        ),
        "ClusterName": (cluster_name, "the EKS cluster"),
        "KubeconfigCommand": (
            Fn.join("", ["aws eks update-kubeconfig --region ", Aws.REGION, " --name ", cluster_name]),
            "point kubectl at the cluster",
        ),
        **endpoint_outputs(access, ui_host=ui_host, api_host=api_host, ui_port=ui_port, api_port=api_port),
        **auth.outputs(),
        "GrafanaCommand": (
            f"kubectl -n {MONITORING_NAMESPACE} port-forward svc/{RELEASE}-grafana 3000:80",
            "then open http://localhost:3000",
        ),
        "DashboardUrl": (
            observability.dashboard_url,
            "CloudWatch dashboard of the trainer",
        ),
        "SigningKeyArn": (signing.key_arn, "KMS key the trainer signs manifests with and the API pods verify"),
        "AlarmTopicArn": (observability.topic.topic_arn, "subscribe to trainer alarms"),
        "TrainerJobQueueArn": (job.job_queue.job_queue_arn, "Batch job queue for retrains too big for the Lambda"),
        "TrainerJobDefinitionArn": (job.job_definition.job_definition_arn, "the trainer's Batch job definition"),
    }
    for name, (value, description) in outputs.items():
        CfnOutput(stack, name, value=value, description=description)
