"""Deployment settings from CDK context: defaults, parsing of `-c key=value` strings, loud failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cdk_fixtures import REPO_ROOT, cdk_json_context

from cdk.settings import DeploySettings, SettingsError, context_key


def test_defaults_are_valid():
    settings = DeploySettings()
    settings.validate()
    assert settings.kubernetes_version == "1.35"
    assert not settings.is_prod


def test_command_line_strings_are_parsed():
    settings = DeploySettings.from_mapping(
        {
            "env_name": "prod",
            "node_instance_types": "m6i.large, m5.large",
            "node_max_size": "6",
            "retain_data": "false",
            "trainer_reserved_concurrency": "3",
            "cluster_endpoint_cidrs": '["203.0.113.0/24"]',
            "alarm_email": "ops@example.com",
        }
    )
    assert settings.is_prod
    assert settings.node_instance_types == ("m6i.large", "m5.large")
    assert settings.node_max_size == 6
    assert settings.retain_data is False
    assert settings.trainer_reserved_concurrency == 3
    assert settings.cluster_endpoint_cidrs == ("203.0.113.0/24",)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kubernetes_version", "1.29", "kubernetesVersion"),
        ("trainer_memory_mib", "lots", "trainerMemoryMib"),
        ("trainer_batch_window_seconds", 301, "trainerBatchWindowSeconds"),
        ("trainer_lock_ttl_seconds", 900, "trainerLockTtlSeconds"),
        ("trainer_max_concurrency", 1, "trainerMaxConcurrency"),
        ("node_min_size", 3, "nodeMinSize"),
        ("retain_data", "maybe", "retainData"),
        ("alarm_email", "not-an-address", "alarmEmail"),
        ("log_retention_days", 10, "logRetentionDays"),
        ("kube_prometheus_stack_version", "latest", "kubePrometheusStackVersion"),
        ("image_tag", "bad tag", "imageTag"),
        ("trainer_job_vcpu", 3, "trainerJobVcpu"),
        ("trainer_job_vcpu", "0.5", "trainerJobVcpu"),
        ("trainer_job_timeout_minutes", 15, "trainerJobTimeoutMinutes"),
        ("trainer_job_timeout_minutes", 1441, "trainerJobTimeoutMinutes"),
        ("trainer_job_max_vcpus", 2, "trainerJobMaxVcpus"),
        ("trainer_job_max_vcpus", 257, "trainerJobMaxVcpus"),
        ("models", "Savings=savings", "models"),
        ("models", "savings", "models"),
        ("models", '{"churn": 3}', "models"),
        ("serve_models", "churn,Savings", "serveModels"),
    ],
)
def test_bad_values_name_the_context_key(key: str, value: object, message: str):
    with pytest.raises(SettingsError, match=message):
        DeploySettings.from_mapping({key: value})


@pytest.mark.parametrize(
    ("vcpu", "memory_mib"),
    [
        (2, 30720),  # 30 GiB needs 4 vCPU
        (4, 4096),  # below 4 vCPU's 8 GiB
        (4, 31744),  # above 4 vCPU's 30 GiB
        (4, 8704),  # 4 vCPU: whole GiB only
        (8, 20480 + 1024),  # 8 vCPU: 4 GiB steps
        (16, 32768 + 4096),  # 16 vCPU: 8 GiB steps
        (1, 16384),  # 1 vCPU: at most 8 GiB
    ],
)
def test_job_memory_must_fit_fargates_table_for_the_vcpu(vcpu: int, memory_mib: int):
    with pytest.raises(SettingsError, match=rf"trainerJobMemoryMib.*trainerJobVcpu={vcpu}"):
        DeploySettings.from_mapping(
            {"trainer_job_vcpu": vcpu, "trainer_job_memory_mib": memory_mib, "trainer_job_max_vcpus": 16}
        )


@pytest.mark.parametrize(
    ("vcpu", "memory_mib"), [(1, 2048), (1, 8192), (2, 16384), (4, 30720), (8, 61440), (8, 20480), (16, 122880)]
)
def test_fargate_sizes_are_accepted(vcpu: int, memory_mib: int):
    settings = DeploySettings.from_mapping(
        {"trainer_job_vcpu": str(vcpu), "trainer_job_memory_mib": str(memory_mib), "trainer_job_max_vcpus": "16"}
    )
    assert (settings.trainer_job_vcpu, settings.trainer_job_memory_mib) == (vcpu, memory_mib)


def test_job_defaults():
    settings = DeploySettings()
    assert (settings.trainer_job_vcpu, settings.trainer_job_memory_mib) == (4, 16384)
    assert (settings.trainer_job_timeout_minutes, settings.trainer_job_max_vcpus) == (240, 16)


def test_batches_over_ten_need_a_batching_window():
    with pytest.raises(SettingsError, match="trainerBatchSize"):
        DeploySettings.from_mapping({"trainer_batch_window_seconds": 0, "trainer_batch_size": 100})
    assert DeploySettings.from_mapping({"trainer_batch_window_seconds": 0, "trainer_batch_size": 10})


def test_node_group_can_scale_to_zero():
    settings = DeploySettings.from_mapping({"node_min_size": "0", "node_desired_size": "0"})
    assert (settings.node_min_size, settings.node_desired_size, settings.node_max_size) == (0, 0, 4)


@pytest.mark.parametrize(
    "value",
    [
        "savings=savings, churn-eu=path/to/churn.json",  # -c models=...
        '["savings=savings", "churn-eu=path/to/churn.json"]',  # a JSON list
        {"savings": "savings", "churn-eu": "path/to/churn.json"},  # an object in cdk.json
    ],
)
def test_models_parse_from_the_command_line_a_list_or_an_object(value: object):
    settings = DeploySettings.from_mapping({"models": value, "serve_models": "churn-eu"})
    assert settings.models == (("savings", "savings"), ("churn-eu", "path/to/churn.json"))
    assert settings.registered_models == settings.models
    assert settings.serve_models == ("churn-eu",)


def test_without_models_the_default_model_is_registered_and_every_model_served():
    settings = DeploySettings.from_mapping({"model_name": "churn", "schema": "churn"})
    assert settings.registered_models == (("churn", "churn"),)
    assert settings.serve_models == ()


def test_unknown_keys_fail():
    with pytest.raises(SettingsError, match="unknown"):
        DeploySettings.from_mapping({"node_count": 3})


def test_every_setting_is_documented():
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for field in dataclasses.fields(DeploySettings):
        assert f"`{context_key(field.name)}`" in doc, f"{context_key(field.name)} missing from docs/deploy.md"


# -- clusterEndpointCidrs: the same check as allowedCidrs (cdk/network_allowlists.py `check_cidrs`) --------------------
@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0/0",
        "0.0.0.0/1,128.0.0.0/1",  # the two halves are the internet too
        "203.0.113.0/24,0.0.0.0/0",  # one open range among narrow ones
        ",".join(f"{i}.0.0.0/8" for i in range(0, 256, 2)),  # narrow enough one by one, half the internet together
    ],
)
def test_cluster_endpoint_cidrs_that_open_the_endpoint_to_the_internet_are_refused(value: str):
    with pytest.raises(SettingsError, match=r"'clusterEndpointCidrs': .*whole internet"):
        DeploySettings.from_mapping({"cluster_endpoint_cidrs": value})


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("999.1.1.1/99", "is not a CIDR"),
        ("203.0.113.0/33", "is not a CIDR"),
        ("10.0.0.1/8", r"is not a CIDR \(10.0.0.1/8 has host bits set\)"),  # a host, not a network: as allowedCidrs
        ("office", "is not a CIDR"),
        ("2001:db8::/32", "is not an IPv4 CIDR"),  # EKS's public endpoint takes IPv4 ranges only
    ],
)
def test_cluster_endpoint_cidrs_must_be_ipv4_networks(value: str, why: str):
    with pytest.raises(SettingsError, match=rf"context 'clusterEndpointCidrs': '{value}' {why}"):
        DeploySettings.from_mapping({"cluster_endpoint_cidrs": value})


def test_cluster_endpoint_cidrs_and_allowed_cidrs_share_one_check():
    from cdk.access_settings import AccessSettings

    for key, build in (
        ("clusterEndpointCidrs", lambda v: DeploySettings.from_mapping({"cluster_endpoint_cidrs": v})),
        ("allowedCidrs", lambda v: AccessSettings.from_mapping({"allowed_cidrs": v})),
    ):
        assert build("203.0.113.0/24,198.51.100.7/32")
        for open_ranges in ("0.0.0.0/0", "0.0.0.0/1,128.0.0.0/1"):
            with pytest.raises(SettingsError, match=rf"'{key}': '0\.0\.0\.0/[01]' opens .* to the whole internet"):
                build(open_ranges)


def test_the_synth_fails_on_an_open_cluster_endpoint(tmp_path: Path):
    """`cdk synth -c clusterEndpointCidrs=0.0.0.0/1,128.0.0.0/1` stops before building anything, naming the key."""
    from aws_cdk import App

    from cdk.app import build_app

    app = App(outdir=str(tmp_path), context={**cdk_json_context(), "clusterEndpointCidrs": "0.0.0.0/1,128.0.0.0/1"})
    with pytest.raises(SettingsError, match=r"'clusterEndpointCidrs': '0\.0\.0\.0/1' opens the Kubernetes API"):
        build_app(app)
