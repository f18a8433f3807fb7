"""Context keys `rolloutMode` / `rolloutShare`: parsed and checked like the others, and passed to the trainer
Lambda and the Batch trainer job alike as FLYWHEEL_ROLLOUT_MODE / FLYWHEEL_ROLLOUT_SHARE (docs/rollouts.md)."""

from __future__ import annotations

from typing import get_args

import pytest
from cdk_fixtures import InProcessSynth, only, trainer_environment

from cdk.settings import ROLLOUT_MODES, DeploySettings, SettingsError


def _job_environment(synth: InProcessSynth) -> dict[str, str]:
    _, job = only(synth.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    return {e["Name"]: e["Value"] for e in job["Properties"]["ContainerProperties"]["Environment"]}


def test_defaults_are_the_trainers():
    from flywheel.settings import TrainerSettings

    settings = DeploySettings()
    assert (settings.rollout_mode, settings.rollout_share) == ("direct", 0.1)
    field = TrainerSettings.model_fields["rollout_mode"]
    assert set(ROLLOUT_MODES) == set(get_args(field.annotation))  # the trainer accepts exactly these
    assert field.default == settings.rollout_mode
    assert TrainerSettings.model_fields["rollout_share"].default == settings.rollout_share


@pytest.mark.parametrize(
    ("mode", "share", "expected"),
    [("canary", "0.25", 0.25), ("shadow", "1", 1.0), ("direct", ".05", 0.05), ("canary", 0.5, 0.5), ("shadow", 1, 1.0)],
)
def test_command_line_strings_and_numbers_are_parsed(mode: str, share: object, expected: float):
    settings = DeploySettings.from_mapping({"rollout_mode": mode, "rollout_share": share})
    assert (settings.rollout_mode, settings.rollout_share) == (mode, expected)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rollout_mode", "blue", "rolloutMode"),
        ("rollout_mode", "Canary", "rolloutMode"),
        ("rollout_mode", "", "rolloutMode"),
        ("rollout_share", 0, "rolloutShare"),
        ("rollout_share", "0", "rolloutShare"),
        ("rollout_share", 1.5, "rolloutShare"),
        ("rollout_share", "-0.1", "rolloutShare"),
        ("rollout_share", "ten percent", "rolloutShare"),
        ("rollout_share", "nan", "rolloutShare"),
        ("rollout_share", float("nan"), "rolloutShare"),
        ("rollout_share", True, "rolloutShare"),
    ],
)
def test_bad_values_name_the_context_key(key: str, value: object, message: str):
    with pytest.raises(SettingsError, match=message):
        DeploySettings.from_mapping({key: value})


def test_default_synth_passes_the_policy_to_the_lambda_and_the_job(synth: InProcessSynth):
    expected = {"FLYWHEEL_ROLLOUT_MODE": "direct", "FLYWHEEL_ROLLOUT_SHARE": "0.1"}
    lambda_env, job_env = trainer_environment(synth), _job_environment(synth)
    assert {k: lambda_env[k] for k in expected} == expected
    assert {k: job_env[k] for k in expected} == expected
