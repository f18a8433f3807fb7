"""Models page and the MLflow mirror, against a real `mlflow server` and moto's S3: a mirrored version links to its
retrain's run in the MLflow UI; a version the mirror missed says how to repair it; with the mirror off, nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.ui import models_page
from tests.conftest import MlflowServer, Stack, free_port
from tests.ui.conftest import open_app, texts, train

COLUMNS = list(models_page._COLUMNS)  # the versions table's, sized to fit the page: the run link adds none


@pytest.fixture
def mirror_on(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The mirror on, into this test's own experiment and registered model of the shared server; the prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("FLYWHEEL_MLFLOW_EXPERIMENT", prefix + "{model}")
    monkeypatch.setenv("FLYWHEEL_MLFLOW_REGISTERED_PREFIX", prefix)
    return prefix


def run_url(server: MlflowServer, experiment: str, version: int) -> str:
    """The MLflow UI's page of version `version`'s retrain run, found with MLflow's own client."""
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    (run,) = client.search_runs(
        [exp.experiment_id], f"tags.`flywheel.role` = 'retrain' and tags.`flywheel.version` = '{version}'"
    )
    return f"{server.url}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"


def mentions_mlflow(at: AppTest) -> list[str]:
    return [t for kind in ("markdown", "caption", "info", "warning") for t in texts(at, kind) if "MLflow" in t]


def test_a_mirrored_version_links_to_its_run_and_a_missed_one_says_how_to_repair(
    stack: Stack, mlflow_server: MlflowServer, mirror_on: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(stack, seed=1).mlflow == "mirrored"
    with monkeypatch.context() as off:  # v2 trained while MLflow was not configured: not mirrored
        off.delenv("MLFLOW_TRACKING_URI")
        assert train(stack, seed=2).mlflow == ""

    at = open_app("models")
    assert list(at.dataframe[0].value.columns) == COLUMNS, "the versions table is unchanged: it still fits the page"
    at.main.selectbox[0].select(1).run()  # the version details' picker
    url = run_url(mlflow_server, mirror_on + "savings", 1)
    link = [t for t in texts(at, "markdown") if "run in MLflow" in t]
    assert link == [f":material/open_in_new: [v1's run in MLflow]({url}): its parameters, metrics and model; tick "
                    "two runs of the experiment there and *Compare*."], link  # fmt: skip

    at.main.selectbox[0].select(2).run()
    assert not [t for t in texts(at, "markdown") if "run in MLflow" in t]
    assert "v2 is not in MLflow yet: `flywheel mlflow sync --model savings` mirrors it." in texts(at, "caption")


def test_without_the_mirror_the_page_shows_nothing_of_mlflow(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert train(stack, seed=1).mlflow == ""
    at = open_app("models")
    assert list(at.dataframe[0].value.columns) == COLUMNS
    assert mentions_mlflow(at) == []


def test_an_mlflow_that_does_not_answer_shows_nothing_and_does_not_hold_the_page(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(stack, seed=1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    at = open_app("models")
    assert time.monotonic() - started < 20
    assert list(at.dataframe[0].value.columns) == COLUMNS
    assert mentions_mlflow(at) == []
