"""The trainer's hand-off to bigger compute: an AWS Batch job on Fargate that runs the trainer image.

A retrain that will not fit the Lambda (15 minutes, 10 GB) is submitted by the trainer Lambda to this job
queue; the job runs the same image and the same core function through the CLI,
`python -m flywheel.cli retrain --model <model>`. The compute environment scales from zero: nothing runs,
and nothing is billed, while no job is submitted.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

#: Appended to the image's ENTRYPOINT (`python -m`, lambdas/trainer/Dockerfile); Batch fills in `Ref::model` and
#: `Ref::lock` from the job's parameters (the defaults below, or what SubmitJob passes: the Lambda passes the
#: token of the trainer lock it claimed for the job, which the job adopts; "none" = take the lock normally).
COMMAND = ["flywheel.cli", "retrain", "--model", "Ref::model", "--adopt-lock", "Ref::lock"]
#: The image's unprivileged user (USER 10001:10001 in the Dockerfile); it owns nothing in the image.
USER = "10001"
#: One retry, and only when the infrastructure failed the attempt (below); a retrain that fails on its own
#: (bad data, a bug, the timeout) fails the same way again, so it is not retried.
ATTEMPTS = 2
RETRY_STRATEGIES = [
    # The host under the task went away (Batch's documented spot/host reason, "Host EC2*").
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
    # Fargate could not start the task (capacity, network interface, image pull): nothing of ours ran.
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom(on_status_reason="Task failed to start")),
    # Anything else exits: Batch retries when no entry matches, so this catch-all must come last.
    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
]


class TrainerJob(Construct):
    """Fargate compute environment in private subnets (egress only), a job queue, and the job definition."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        image: ecr_assets.DockerImageAsset,
        vpc: ec2.IVpc,
        environment: dict[str, str],
        model_name: str,
        vcpu: int,
        memory_mib: int,
        timeout: Duration,
        max_vcpus: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        # No ingress at all: the job only calls out (ECR and CloudWatch Logs through the NAT gateway, S3 through
        # the VPC's gateway endpoint).
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=True,
            description="Flywheel trainer jobs: egress only",
        )
        # No service role: Batch uses its service-linked role (AWSServiceRoleForBatch).
        self.compute_environment = batch.FargateComputeEnvironment(
            self,
            "ComputeEnvironment",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.security_group],
            maxv_cpus=max_vcpus,
            spot=False,  # a retrain runs for hours; an interruption would throw the work away
        )
        self.job_queue = batch.JobQueue(
            self,
            "Queue",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=self.compute_environment, order=1)
            ],
        )

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        # Used by Fargate to start the task: pull the image (granted by the image binding) and write this log
        # group (granted by the log driver). Nothing else.
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Flywheel trainer job: pull the trainer image, write the job's log group",
        )
        # Used by the trainer inside the container; the Stack grants it exactly the trainer Lambda's S3 access.
        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Flywheel trainer job: the trainer's S3 access, nothing else",
        )
        container = batch.EcsFargateContainerDefinition(
            self,
            "Container",
            image=ecs.ContainerImage.from_docker_image_asset(image),
            cpu=vcpu,
            memory=Size.mebibytes(memory_mib),
            command=COMMAND,
            environment=environment,
            execution_role=self.execution_role,
            job_role=self.job_role,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="trainer", log_group=self.log_group),
            user=USER,
            # The root file system stays writable, and that is all it can be here: Batch on Fargate offers
            # neither tmpfs nor host volumes, and a bind mount on /tmp is owned by root (0755) unless the image
            # declares `VOLUME /tmp`, which would change the Lambda's image too. Running as 10001, the trainer
            # can write only the world-writable /tmp and /var/tmp, exactly what the Lambda offers it.
            readonly_root_filesystem=False,
            fargate_cpu_architecture=ecs.CpuArchitecture.X86_64,  # the image is built for linux/amd64
            fargate_operating_system_family=ecs.OperatingSystemFamily.LINUX,
            assign_public_ip=False,
        )
        self.job_definition_name = f"{Stack.of(self).stack_name}-trainer"
        self.job_definition = batch.EcsJobDefinition(
            self,
            "Definition",
            container=container,
            job_definition_name=self.job_definition_name,
            parameters={"model": model_name, "lock": "none"},
            timeout=timeout,
            retry_attempts=ATTEMPTS,
            retry_strategies=RETRY_STRATEGIES,
            propagate_tags=True,  # the stack's project/environment tags reach the Fargate task (cost reports)
        )

    @property
    def job_definition_arns(self) -> list[str]:
        """The job definition's ARN with its current revision (what the trainer submits), and without one.

        Batch authorizes SubmitJob against the ARN with the revision: a name-only resource matches no request
        (AWS Batch User Guide, "Accounting for job definition revisions"). The name-only ARN is granted too, as
        older guidance for callers naming the definition without a revision asks; it grants nothing more. No
        `:*` wildcard, so earlier revisions stay out.
        """
        unrevised = Stack.of(self).format_arn(
            service="batch", resource="job-definition", resource_name=self.job_definition_name
        )
        return [self.job_definition.job_definition_arn, unrevised]
