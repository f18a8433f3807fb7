"""A scrape of the agent's /metrics while it adopts a model: the model's drift monitor exists a moment before its
host does (flywheel/serving/agent.py, `_start`), and `refresh_drift` (run before every scrape) failed the scrape
with a KeyError in that moment (seen in CI: a replica's first scrape, right as it adopted its first model)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from flywheel.serving.agent import Agent
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.monitor import DriftMonitor
from flywheel.settings import ServeSettings
from tests.conftest import Stack


def test_a_scrape_while_a_model_is_adopted_skips_the_model_without_a_host(stack: Stack) -> None:
    metrics = ServingMetrics(CollectorRegistry())
    agent = Agent(ServeSettings(bucket=stack.bucket, api_auth="off"), stack.s3, metrics)  # type: ignore[call-arg]
    agent.monitors["savings"] = DriftMonitor(metrics, "savings")  # as `_start` leaves it until the host is made
    assert "savings" not in agent.hosts
    agent.refresh_drift()  # raised KeyError: 'savings'
