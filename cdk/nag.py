"""cdk-nag (AwsSolutions) findings this stack acknowledges, each with the reason it is acceptable here.

Anything not listed fails the synth. The same list, with the same reasons, is in docs/deploy.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

_PARTITION = "arn:<AWS::Partition>:iam::aws:policy"
_PREFIX_GRANT = (
    "Object-level S3 grant scoped to one key prefix of the Flywheel bucket; the keys below it are created at "
    "run time, so the prefix wildcard is the narrowest possible resource."
)
_CDK_KUBECTL = (
    "Part of the kubectl custom-resource provider that aws_eks_v2 creates to apply manifests and Helm charts; "
    "its roles and runtime are owned by aws-cdk-lib."
)

#: The trainer's (Lambda and Batch job) object-level grants: one key prefix each (cdk/grants.py trainer_statements;
#: `captures/` read-only; `feedback/` read-only but for the Lambda's quarantine of a bad file: cdk/feedback_arrival.py).
_TRAINER_PREFIXES = ("data", "quarantine", "validated", "models", "captures", "feedback")


@dataclass(frozen=True)
class Finding:
    """One acknowledged finding: where (a construct path below the stack), which rule, and why."""

    path: str
    rule: str
    reason: str


FINDINGS: tuple[Finding, ...] = (
    # Trainer
    Finding(
        "Trainer/Role/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::*]",
        "Only the X-Ray actions added by active tracing (xray:PutTraceSegments, xray:PutTelemetryRecords) use "
        "Resource '*': X-Ray has no resource-level permissions (a test asserts nothing else does).",
    ),
    *(
        Finding(
            "Trainer/Role/DefaultPolicy", f"AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/{p}/*]", _PREFIX_GRANT
        )
        for p in _TRAINER_PREFIXES
    ),
    Finding(
        "Trainer/Role/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/data/*/feedback/*]",
        "PutObject of the batch a feedback file becomes (cdk/feedback_arrival.py): model and file names are known "
        "only at run time; create-only (the policy requires If-None-Match), and only keys under data/ with a "
        "feedback/ folder match.",
    ),
    # Trainer job (AWS Batch on Fargate): the job role has the trainer's S3 statements, no more
    *(
        Finding(
            "TrainerJob/JobRole/DefaultPolicy",
            f"AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/{p}/*]",
            _PREFIX_GRANT + " The same statements as the trainer Lambda's (a test asserts they are equal).",
        )
        for p in _TRAINER_PREFIXES
    ),
    Finding(
        "TrainerJob/ExecutionRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::*]",
        "Only ecr:GetAuthorizationToken, which ECR authorizes on Resource '*' only (it has no resource-level "
        "permissions); the image pull itself is scoped to the asset repository (a test asserts nothing else "
        "uses '*').",
    ),
    # Rollout judge Lambda (cdk/rollout_judge.py): reads models/, writes three key patterns under it
    Finding(
        "RolloutJudge/Role/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*]",
        _PREFIX_GRANT + " Read-only (GetObject), as the API pods': rollouts, the pods' statistics, aliases, manifests.",
    ),
    *(
        Finding(
            "RolloutJudge/Role/DefaultPolicy",
            f"AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*/{key}]",
            "PutObject on one key pattern of any model (models are registered at run time, so their names are "
            "unknown at synth): the wildcards stand for the model folder (and a version's number and a history "
            "event's name); no manifest, model file, registration or statistics object matches.",
        )
        for key in ("rollout.json", "aliases/production.json", "versions/*/history/*")
    ),
    # API pods (Pod Identity role of ServiceAccount flywheel-app)
    Finding(
        "Serving/AppPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*]",
        _PREFIX_GRANT + " Read-only (GetObject): the pods' only write is their rollout statistics, granted on "
        "its own key pattern.",
    ),
    Finding(
        "Serving/AppPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*/rollouts/*/stats/*]",
        "PutObject of the pods' rollout statistics (flywheel/release/rollout_stats.py): the wildcards stand for the "
        "model, the rollout id and the pod id, all known only at run time; no alias, rollout state, version file or "
        "registration matches, and the judge checks every figure it reads there.",
    ),
    Finding(
        "Serving/AppPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/captures/*]",
        "PutObject of captured predictions (docs/captures.md): files are named by model, day, pod and sequence "
        "at run time; the pods cannot read, list or delete them.",
    ),
    # UI pods (Pod Identity role of ServiceAccount flywheel-ui)
    Finding(
        "Serving/UiPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/data/*]",
        _PREFIX_GRANT + " The UI lists and reads batches and uploads new ones (GetObject, PutObject; no delete).",
    ),
    Finding(
        "Serving/UiPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/quarantine/*.error.json]",
        _PREFIX_GRANT + " Read-only, and only the .error.json reports the UI shows, not the rejected batches.",
    ),
    Finding(
        "Serving/UiPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/validated/*/index.json]",
        "Read-only (GetObject) of each model's index of validated batches, whose model names are known only at run "
        "time: the Data page says which batch the trainer skips as a repeat. Not the validated copies themselves.",
    ),
    Finding(
        "Serving/UiPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*]",
        _PREFIX_GRANT + " Read-only (GetObject): the UI's only writes under models/ (with sign-in) are the "
        "production alias, the rollout state and history events, each granted on its own key pattern.",
    ),
    *(
        Finding(
            "Serving/UiPodRole/DefaultPolicy",
            f"AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/{prefix}*]",
            _PREFIX_GRANT + " Read-only (GetObject): the Models page's live quality and the Drift page read the "
            "captured predictions and their labels; the UI never writes there.",
        )
        for prefix in ("captures/", "feedback/")
    ),
    # Cluster Autoscaler (cdk/node_autoscaler.py, Pod Identity role of kube-system/cluster-autoscaler)
    Finding(
        "Serving/NodeAutoscaler/Role/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::*]",
        "Cluster Autoscaler's documented least privilege: the autoscaling/EC2 Describe and Get actions have no "
        "resource-level permissions (Resource '*' only); SetDesiredCapacity and TerminateInstanceInAutoScalingGroup "
        "are on '*' but conditioned on the tag k8s.io/cluster-autoscaler/<this cluster> = owned that EKS puts on "
        "this cluster's node group only; eks:DescribeNodegroup is scoped to the node group (a test checks all three).",
    ),
    # API keys (cdk/api_keys.py)
    Finding(
        "Access/ApiKeys/Store",
        "AwsSolutions-SMG4",
        "The API key store holds hashes of keys, edited by `flywheel apikey create/revoke`: a key is rotated by "
        "creating a new one and revoking the old (docs/security.md); a Secrets Manager rotation Lambda would have "
        "nothing to rotate.",
    ),
    Finding(
        "Access/ApiKeys/UiKey",
        "AwsSolutions-SMG4",
        "The UI's own API key, read by the API and UI pods at start: rotated by putting a new random value "
        "(docs/security.md) and restarting both Deployments; a rotation Lambda cannot restart pods, so a scheduled "
        "rotation would leave the UI refused until the next restart.",
    ),
    # EKS control plane and nodes
    Finding(
        "Serving/Cluster/Role",
        f"AwsSolutions-IAM4[Policy::{_PARTITION}/AmazonEKSClusterPolicy]",
        "EKS requires this AWS-managed policy on the cluster role; AWS keeps it in step with what EKS needs.",
    ),
    *(
        Finding(
            "Serving/Cluster/NodegroupNodes/NodeGroupRole",
            f"AwsSolutions-IAM4[Policy::{_PARTITION}/{policy}]",
            "Managed node groups need the AWS-managed worker policies (join the cluster, run the VPC CNI, pull "
            "images from ECR); EKS documents exactly these three for the node role.",
        )
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")
    ),
    # kubectl provider (aws-cdk-lib internals)
    *(
        Finding(
            "Serving/Cluster/KubectlProvider/Handler/ServiceRole", f"AwsSolutions-IAM4[Policy::{policy}]", _CDK_KUBECTL
        )
        for policy in (
            f"{_PARTITION}/service-role/AWSLambdaBasicExecutionRole",
            f"{_PARTITION}/service-role/AWSLambdaVPCAccessExecutionRole",
            f"{_PARTITION}/AmazonEC2ContainerRegistryReadOnly",
            '{"Fn::If":["ServingClusterKubectlProviderHandlerHasEcrPublicCD9C2265",{"Fn::Join":["",["arn:",'
            '{"Ref":"AWS::Partition"},":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},'
            '{"Ref":"AWS::NoValue"}]}',
        )
    ),
    Finding(
        "Serving/Cluster/KubectlProvider/Handler",
        "AwsSolutions-L1",
        _CDK_KUBECTL + " The handler's Python runtime is pinned by aws-cdk-lib to match the kubectl layer.",
    ),
    *(
        Finding(
            "Serving/Cluster/KubectlProvider/Provider/framework-onEvent/ServiceRole",
            f"AwsSolutions-IAM4[Policy::{_PARTITION}/service-role/{policy}]",
            _CDK_KUBECTL,
        )
        for policy in ("AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole")
    ),
    Finding(
        "Serving/Cluster/KubectlProvider/Provider/framework-onEvent/ServiceRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<ServingClusterKubectlProviderHandler86C000B2.Arn>:*]",
        _CDK_KUBECTL + " The wildcard covers the versions of its own handler function only.",
    ),
    # Model registrations (cdk/registrations.py): aws-cdk-lib's AwsCustomResource runs one singleton Lambda
    Finding(
        "AWS679f53fac002430cb0da5b7982bd2287/ServiceRole",
        f"AwsSolutions-IAM4[Policy::{_PARTITION}/service-role/AWSLambdaBasicExecutionRole]",
        "The singleton Lambda behind aws-cdk-lib's AwsCustomResource, which writes each registered model's "
        "schema.json at deploy; the managed policy only lets it write its logs, and each registration adds a "
        "policy allowing s3:PutObject on exactly that model's models/<name>/schema.json.",
    ),
    # S3 -> SQS notification custom resource (aws-cdk-lib internals)
    Finding(
        "BucketNotificationsHandler050a0587b7544547bf325f094a3db834/Role",
        f"AwsSolutions-IAM4[Policy::{_PARTITION}/service-role/AWSLambdaBasicExecutionRole]",
        "The singleton Lambda aws-cdk-lib uses to configure S3 bucket notifications; it only writes its own logs "
        "with this policy.",
    ),
)

#: Findings that arise with some context only (uiDomain + certificateArn: the Cognito user pool, and a UI that
#: operators sign in to, so its role may move aliases).
OPTIONAL_FINDINGS: tuple[Finding, ...] = (
    Finding(
        "Serving/UiPodRole/DefaultPolicy",
        "AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*/aliases/production.json]",
        "PutObject on the production alias of any model (promote, roll back): models are registered at run time "
        "(flywheel models add), so their names are unknown at synth. The wildcard stands for the model folder and "
        "the key must end in /aliases/production.json, so no version, manifest, registration or rollout is "
        "writable. Granted only with sign-in (oidc); a viewer-only UI writes nothing.",
    ),
    *(
        Finding(
            "Serving/UiPodRole/DefaultPolicy",
            f"AwsSolutions-IAM5[Resource::<DataBucketE6B0FAA8.Arn>/models/*/{key}]",
            "PutObject on one key pattern of any model for an operator's Promote candidate / Abort rollout "
            "(models are registered at run time, so their names are unknown at synth): the wildcards stand for the "
            "model folder (and a version's number and a history event's name); no manifest, model file, "
            "registration or statistics object matches, and the bucket policy denies the version's own files. "
            "Granted only with sign-in (oidc); a viewer-only UI writes nothing.",
        )
        for key in ("rollout.json", "versions/*/history/*")
    ),
    Finding(
        "Access/Identity/OidcConfig",
        "AwsSolutions-SMG4",
        "The UI's OIDC client settings are derived from the Cognito app client (its id and secret): the stack "
        "writes them, so rotating means replacing the app client (docs/security.md); a rotation Lambda would make "
        "the secret disagree with the client Cognito knows.",
    ),
    Finding(
        "Access/Identity/CookieSecret",
        "AwsSolutions-SMG4",
        "The key Streamlit signs its auth cookie with, read by the UI pods at start: rotated by putting a new "
        "random value and restarting the UI (everybody signs in again, docs/security.md); a scheduled rotation "
        "would not reach running pods.",
    ),
)


def acknowledge_findings(stack: Stack) -> None:
    """Acknowledge every entry of FINDINGS on its construct (a missing path fails loudly), and those of
    OPTIONAL_FINDINGS whose construct this deployment has (they exist with some context only)."""
    for finding in FINDINGS:
        Validations.of(_find(stack, finding.path)).acknowledge(Acknowledgment(id=finding.rule, reason=finding.reason))
    for finding in OPTIONAL_FINDINGS:
        try:
            construct = _find(stack, finding.path)
        except LookupError:
            continue
        Validations.of(construct).acknowledge(Acknowledgment(id=finding.rule, reason=finding.reason))


def _find(stack: Stack, path: str) -> IConstruct:
    node: IConstruct = stack
    for part in path.split("/"):
        child = node.node.try_find_child(part)
        if child is None:
            raise LookupError(f"cdk-nag acknowledgment: no construct {path!r} in {stack.stack_name}")
        node = child
    return node
