"""Deployment settings read from CDK context (`cdk.json` or `-c key=value`); defaults live here only.

Every key is documented in docs/deploy.md. A bad value fails the synth with the key's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from constructs import Node

from cdk.context import SettingsError as SettingsError  # re-exported: callers import it from here
from cdk.context import (
    check_all,
    matches,
    optional,
    parse_bool,
    parse_float,
    parse_int,
    parse_str,
    parse_str_tuple,
    parse_values,
    read_context,
)
from cdk.context import context_key as context_key
from cdk.network_allowlists import check_cidrs
from cdk.registrations import MODEL_NAME, parse_models

#: The kubectl layer installed (aws-cdk.lambda-layer-kubectl-v35) talks to API servers one minor version
#: either side (Kubernetes version skew policy), so these are the versions this app can manage.
SUPPORTED_KUBERNETES_VERSIONS = ("1.34", "1.35", "1.36")

#: CloudWatch Logs retentions offered here (days); cdk/stack.py maps them to RetentionDays.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 180, 365, 731)

#: Fargate's task sizes (AWS Batch on Fargate takes the same table): vCPU -> (min, max, step) memory in MiB.
#: Only whole vCPUs: 0.25 and 0.5 vCPU top out at 4 GiB, less than the Lambda the job stands in for.
FARGATE_MEMORY_MIB = {
    1: (2048, 8192, 1024),
    2: (4096, 16384, 1024),
    4: (8192, 30720, 1024),
    8: (16384, 61440, 4096),
    16: (32768, 122880, 8192),
}

#: The trainer Lambda's hard limit; a job that may not run longer than this belongs in the Lambda.
LAMBDA_TIMEOUT_MINUTES = 15

#: How an approved version reaches production (FLYWHEEL_ROLLOUT_MODE of flywheel/settings.py, docs/rollouts.md).
ROLLOUT_MODES = ("direct", "shadow", "canary")


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """What one deployment of Flywheel looks like. Context keys are the field names in camelCase."""

    env_name: str = "dev"
    kubernetes_version: str = "1.35"
    node_instance_types: tuple[str, ...] = ("t3.large",)
    node_min_size: int = 2
    node_desired_size: int = 2
    node_max_size: int = 4
    node_disk_size_gib: int = 30
    nat_gateways: int = 1
    cluster_endpoint_cidrs: tuple[str, ...] = ()
    admin_role_arn: str | None = None
    image_tag: str = "latest"
    model_name: str = "savings"
    schema: str = "savings"
    #: Models registered at deploy (name, schema); empty means the default model alone: modelName=schema.
    models: tuple[tuple[str, str], ...] = ()
    #: FLYWHEEL_SERVE_MODELS of the API pods; empty means every registered model.
    serve_models: tuple[str, ...] = ()
    trainer_memory_mib: int = 3008
    trainer_ephemeral_storage_mib: int = 2048
    trainer_batch_size: int = 100
    trainer_batch_window_seconds: int = 60
    trainer_max_concurrency: int = 2
    trainer_reserved_concurrency: int | None = None
    trainer_lock_ttl_seconds: int = 1200
    trainer_job_vcpu: int = 4
    trainer_job_memory_mib: int = 16384
    trainer_job_timeout_minutes: int = 240
    trainer_job_max_vcpus: int = 16
    #: The trainer's (Lambda and Batch job) FLYWHEEL_ROLLOUT_MODE / FLYWHEEL_ROLLOUT_SHARE.
    rollout_mode: str = "direct"
    rollout_share: float = 0.1
    log_retention_days: int = 30
    noncurrent_version_days: int = 90
    quarantine_expiration_days: int = 365
    #: Days a captured prediction stays under `captures/` (docs/captures.md, Privacy).
    capture_retention_days: int = 30
    retain_data: bool = True
    alarm_email: str | None = None
    kube_prometheus_stack_version: str = "88.2.0"

    @property
    def registered_models(self) -> tuple[tuple[str, str], ...]:
        """(name, schema) of every model the deploy registers: `models`, or else `modelName=schema`."""
        return self.models or ((self.model_name, self.schema),)

    @property
    def is_prod(self) -> bool:
        """Production gets quieter logs; every other environment logs at DEBUG."""
        return self.env_name == "prod"

    @classmethod
    def from_context(cls, node: Node) -> DeploySettings:
        """Read every field from the construct tree's context, falling back to the defaults above."""
        return cls.from_mapping(read_context(cls, node))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DeploySettings:
        """Build from snake_case keys; strings (as `-c key=value` gives them) are parsed to each field's type."""
        settings = cls(**parse_values(cls, values, _PARSERS.__getitem__))
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError naming the first context key whose value is out of range."""
        check_all(self, self._checks())
        check_cidrs(
            "cluster_endpoint_cidrs",
            self.cluster_endpoint_cidrs,
            versions=(4,),  # EKS takes IPv4 ranges only for its public endpoint
            opens="the Kubernetes API endpoint",
            instead="list the networks that must reach it (your egress addresses), or leave it unset for a "
            "private endpoint only",
        )

    def _checks(self) -> list[tuple[str, bool, str]]:
        max_batch = 10000 if self.trainer_batch_window_seconds else 10
        return [
            ("env_name", matches(r"[a-z][a-z0-9-]{0,15}", self.env_name), "lower-case, <= 16 chars"),
            (
                "kubernetes_version",
                self.kubernetes_version in SUPPORTED_KUBERNETES_VERSIONS,
                f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)} (the kubectl layer's skew range)",
            ),
            ("node_instance_types", len(self.node_instance_types) > 0, "at least one instance type"),
            ("node_min_size", 0 <= self.node_min_size <= self.node_desired_size, "0 <= min <= desired"),
            (
                "node_max_size",
                self.node_desired_size <= self.node_max_size and self.node_max_size >= 1,
                "desired <= max, max >= 1",
            ),
            ("node_disk_size_gib", 20 <= self.node_disk_size_gib <= 1000, "20..1000"),
            ("nat_gateways", 1 <= self.nat_gateways <= 2, "1 or 2 (the VPC spans two AZs)"),
            ("image_tag", matches(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.image_tag), "an image tag"),
            ("model_name", MODEL_NAME.fullmatch(self.model_name) is not None, "a registry name"),
            ("schema", len(self.schema) > 0, "a schema name"),
            (
                "models",
                all(MODEL_NAME.fullmatch(name) for name, _ in self.models),
                "name=schema pairs, each name matching ^[a-z0-9][a-z0-9-]{0,62}$",
            ),
            (
                "models",
                all(ref == self.schema for name, ref in self.models if name == self.model_name),
                f"the default model {self.model_name!r} (modelName) with the schema of `schema` ({self.schema!r})",
            ),
            ("serve_models", all(MODEL_NAME.fullmatch(n) for n in self.serve_models), "model names, or empty (all)"),
            ("trainer_memory_mib", 128 <= self.trainer_memory_mib <= 10240, "128..10240"),
            ("trainer_ephemeral_storage_mib", 512 <= self.trainer_ephemeral_storage_mib <= 10240, "512..10240"),
            ("trainer_batch_window_seconds", 0 <= self.trainer_batch_window_seconds <= 300, "0..300"),
            ("trainer_batch_size", 1 <= self.trainer_batch_size <= max_batch, f"1..{max_batch} for this window"),
            ("trainer_max_concurrency", 2 <= self.trainer_max_concurrency <= 1000, "2..1000 (SQS ESM limits)"),
            (
                "trainer_reserved_concurrency",
                self.trainer_reserved_concurrency is None or self.trainer_reserved_concurrency >= 1,
                ">= 1, or unset",
            ),
            ("trainer_lock_ttl_seconds", self.trainer_lock_ttl_seconds > 900, "> 900 (the trainer's timeout)"),
            (
                "trainer_job_vcpu",
                self.trainer_job_vcpu in FARGATE_MEMORY_MIB,
                f"one of {', '.join(map(str, FARGATE_MEMORY_MIB))} (Fargate task sizes)",
            ),
            ("trainer_job_memory_mib", self._job_memory_fits(), self._job_memory_expected()),
            (
                "trainer_job_timeout_minutes",
                LAMBDA_TIMEOUT_MINUTES < self.trainer_job_timeout_minutes <= 1440,
                f"{LAMBDA_TIMEOUT_MINUTES + 1}..1440 (longer than the Lambda, at most a day)",
            ),
            (
                "trainer_job_max_vcpus",
                self.trainer_job_vcpu <= self.trainer_job_max_vcpus <= 256,
                "trainerJobVcpu..256 (room for at least one job)",
            ),
            ("rollout_mode", self.rollout_mode in ROLLOUT_MODES, f"one of {', '.join(ROLLOUT_MODES)}"),
            ("rollout_share", 0.0 < self.rollout_share <= 1.0, "0 < share <= 1"),
            ("log_retention_days", self.log_retention_days in LOG_RETENTION_DAYS, f"one of {LOG_RETENTION_DAYS}"),
            ("noncurrent_version_days", self.noncurrent_version_days >= 1, ">= 1"),
            ("quarantine_expiration_days", self.quarantine_expiration_days >= 30, ">= 30"),
            ("capture_retention_days", 1 <= self.capture_retention_days <= 3650, "1..3650"),
            (
                "alarm_email",
                self.alarm_email is None or matches(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.alarm_email),
                "an e-mail address, or unset",
            ),
            (
                "admin_role_arn",
                self.admin_role_arn is None or matches(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", self.admin_role_arn),
                "an IAM role ARN, or unset",
            ),
            (
                "kube_prometheus_stack_version",
                matches(r"\d+\.\d+\.\d+", self.kube_prometheus_stack_version),
                "an exact chart version (pinned)",
            ),
        ]

    def _job_memory_fits(self) -> bool:
        if self.trainer_job_vcpu not in FARGATE_MEMORY_MIB:
            return True  # the vCPU check names the key at fault
        low, high, step = FARGATE_MEMORY_MIB[self.trainer_job_vcpu]
        return low <= self.trainer_job_memory_mib <= high and (self.trainer_job_memory_mib - low) % step == 0

    def _job_memory_expected(self) -> str:
        low, high, step = FARGATE_MEMORY_MIB.get(self.trainer_job_vcpu, (0, 0, 1))
        return f"{low}..{high} in steps of {step} for trainerJobVcpu={self.trainer_job_vcpu} (Fargate task sizes)"


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "env_name": parse_str,
    "kubernetes_version": parse_str,
    "node_instance_types": parse_str_tuple,
    "node_min_size": parse_int,
    "node_desired_size": parse_int,
    "node_max_size": parse_int,
    "node_disk_size_gib": parse_int,
    "nat_gateways": parse_int,
    "cluster_endpoint_cidrs": parse_str_tuple,
    "admin_role_arn": optional(parse_str),
    "image_tag": parse_str,
    "model_name": parse_str,
    "schema": parse_str,
    "models": parse_models,
    "serve_models": parse_str_tuple,
    "trainer_memory_mib": parse_int,
    "trainer_ephemeral_storage_mib": parse_int,
    "trainer_batch_size": parse_int,
    "trainer_batch_window_seconds": parse_int,
    "trainer_max_concurrency": parse_int,
    "trainer_reserved_concurrency": optional(parse_int),
    "trainer_lock_ttl_seconds": parse_int,
    "trainer_job_vcpu": parse_int,
    "trainer_job_memory_mib": parse_int,
    "trainer_job_timeout_minutes": parse_int,
    "trainer_job_max_vcpus": parse_int,
    "rollout_mode": parse_str,
    "rollout_share": parse_float,
    "log_retention_days": parse_int,
    "noncurrent_version_days": parse_int,
    "quarantine_expiration_days": parse_int,
    "capture_retention_days": parse_int,
    "retain_data": parse_bool,
    "alarm_email": optional(parse_str),
    "kube_prometheus_stack_version": parse_str,
}
