"""Several models in one bucket (issue 11): the sidebar's picker, and every page working on the chosen model."""

from __future__ import annotations

import json

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.ui.form_fields import median_from_profile
from flywheel.names import model_of_batch_key
from flywheel.registry.registrations import register
from flywheel.registry.store import Registry
from flywheel.schema import load_schema
from flywheel.settings import CoreSettings
from lambdas.trainer.events import parse_event, relevant
from tests import loopback
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.ui.conftest import Api, Signer, open_app, pick, texts, train, wait_for


@pytest.fixture
def two_models(stack: Stack) -> Stack:
    """savings (v1, v2) and churn (v1, plus a quarantined batch), each registered and trained by the trainer."""
    register(stack.s3, stack.bucket, "savings", load_schema("savings"))
    register(stack.s3, stack.bucket, "churn", load_schema("churn"))
    train(stack, seed=1, model="savings")
    train(stack, seed=2, model="savings", gate_tolerance=1.0)
    stack.put("data/churn/bad.csv", csv_bytes(100, seed=9))  # a savings file dropped into churn's folder
    outcome = train(stack, seed=3, model="churn")
    assert outcome.status == "promoted" and [q.key for q in outcome.quarantined] == ["data/churn/bad.csv"]
    stack.receive(wait=0)  # drop the notifications of the set-up
    return stack


def form_features(at: AppTest) -> list[str]:
    """The feature names of the prediction form's widgets (labels carry the unit in brackets)."""
    return sorted(w.label.split(" (")[0] for w in [*at.main.number_input, *at.main.selectbox])


def test_the_picker_lists_every_registered_model_and_starts_on_the_default(two_models: Stack) -> None:
    at = open_app()
    picker = at.selectbox(key="model")
    assert picker.options == ["churn", "savings"] and picker.value == "savings"
    assert at.query_params["model"] == "savings", "the URL names the model, so a link opens it again"


def test_switching_model_changes_the_form_the_versions_and_the_data(two_models: Stack) -> None:
    stack = two_models
    savings, churn = load_schema("savings"), load_schema("churn")
    at = open_app()  # no API is running: the form follows the registered schema
    assert form_features(at) == sorted(savings.feature_names)
    pick(at, "churn")
    assert form_features(at) == sorted(churn.feature_names)
    assert at.query_params["model"] == "churn"
    assert any(w.startswith("the prediction API") and f"{churn.name!r}" in w for w in texts(at, "warning"))

    at.switch_page("views/models.py").run()
    assert at.selectbox(key="model").value == "churn", "the choice holds across pages"
    metric = stack.get_json("models/churn/versions/000001/manifest.json")["gate"]["primary_metric"]
    table = at.main.dataframe[0].value
    assert (
        list(table["version"]) == [1] and list(table["metric"]) == [metric] and list(table["status"]) == ["production"]
    )
    pick(at, "savings")
    table = at.main.dataframe[0].value
    assert list(table["version"]) == [2, 1] and set(table["metric"]) == {"r2"}
    assert [m.value for m in at.metric] == ["v2"]

    at.switch_page("views/data.py").run()
    assert sorted(at.main.dataframe[0].value["key"]) == ["data/savings/batch-1.csv", "data/savings/batch-2.csv"]
    assert texts(at, "subheader")[-1] == "Quarantined (0)"
    pick(at, "churn")
    batches = at.main.dataframe[0].value
    assert list(batches["key"]) == ["data/churn/batch-3.csv"] and list(batches["in v1"]) == [True]
    assert texts(at, "subheader")[-1] == "Quarantined (1)"
    report = stack.get_json("quarantine/churn/bad.csv.error.json")
    assert report["error"] in texts(at, "error")


def test_a_link_opens_its_model_and_an_unknown_one_says_so(two_models: Stack) -> None:
    at = open_app("models", model="churn")
    assert at.selectbox(key="model").value == "churn"
    assert texts(at, "header") == ["Models · churn"]

    at = open_app(model="nope")
    assert at.selectbox(key="model").value == "savings"
    assert any("'nope' from the link is not registered" in w for w in texts(at, "warning"))
    assert at.query_params["model"] == "savings"


def test_an_upload_with_churn_chosen_lands_under_data_churn(two_models: Stack, signer: Signer) -> None:
    stack = two_models
    data = csv_bytes(50, seed=4, dataset="churn")
    at = open_app("data", model="churn", identity=signer.token("operator"))
    at.file_uploader[0].set_value(("march.csv", data, "text/csv"))
    at.button(key="upload-batch").click().run()
    assert f"s3://{stack.bucket}/data/churn/march.csv" in texts(at, "success")[0]
    assert stack.keys("data/churn/") == ["data/churn/batch-3.csv", "data/churn/march.csv"]
    assert stack.s3.get_object(Bucket=stack.bucket, Key="data/churn/march.csv")["Body"].read() == data
    assert "data/churn/march.csv" in list(at.main.dataframe[0].value["key"]), "listed at once"
    # the notification reaches the queue, and its key routes to the churn model's retrain
    picked = relevant(parse_event({"Records": stack.receive()}), "data/")
    assert [o.key for o in picked] == ["data/churn/march.csv"]
    assert model_of_batch_key(picked[0].key, CoreSettings(bucket=stack.bucket)) == "churn"


def test_promote_and_rollback_move_only_the_chosen_models_alias(two_models: Stack, signer: Signer) -> None:
    stack = two_models
    train(stack, seed=5, model="churn", gate_tolerance=1.0)
    assert stack.get_json("models/churn/aliases/production.json")["version"] == 2
    at = open_app("models", model="churn", identity=signer.token("operator"))
    at.button(key="rollback").click().run()
    assert "Rolled back churn: production → v1 (was v2)." in texts(at, "success")[0]
    churn = stack.get_json("models/churn/aliases/production.json")
    assert (churn["version"], churn["updated_by"]) == (1, "test-operator (operator, local-token)")
    assert stack.get_json("models/savings/aliases/production.json")["version"] == 2, "savings untouched"


def test_predict_asks_the_api_for_the_chosen_model(
    two_models: Stack, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.wait_version(2, timeout=60)  # the default model, savings
    wait_for(lambda: _served_version(api, "churn") == 1, 60, "API serving churn v1")
    churn = load_schema("churn")
    manifest = Registry(two_models.s3, two_models.bucket, "churn").manifest(1)  # the UI reads stats from S3

    at = open_app(model="churn")
    assert any("Serving **churn v1**" in c for c in texts(at, "caption"))
    assert form_features(at) == sorted(churn.feature_names)
    tenure = next(w for w in at.main.number_input if w.label.startswith("tenure_months"))
    assert tenure.value == round(median_from_profile(manifest["feature_stats"]["tenure_months"]) or -1)
    next(w for w in at.main.selectbox if w.label == "contract").select("two_year")
    at.button(key="FormSubmitter:predict-Predict").click().run()
    (shown,) = texts(at, "success")
    assert shown.startswith(f"**churn v1** predicts {churn.target.name} = ")
    instance = json.loads(at.json[0].value)["instances"][0]
    assert instance["contract"] == "two_year"
    direct = loopback.post(api.url + "/v1/models/churn/predict", json={"instances": [instance]}, timeout=5).json()
    assert f"**{direct['predictions'][0]}**" in shown, "the UI shows what the API computed for churn"
    assert at.get("vega_lite_chart"), "class probabilities"

    pick(at, "savings")
    assert any("Serving **savings v2**" in c for c in texts(at, "caption"))
    assert not texts(at, "success"), "churn's prediction is not shown under savings"
    assert not at.toast, "switching models is not a change of the served version"

    # without a bucket the picker lists what the API serves, and the form follows the served manifest
    monkeypatch.delenv("FLYWHEEL_BUCKET")
    st.cache_resource.clear()
    st.cache_data.clear()
    at = open_app(model="churn")
    assert at.selectbox(key="model").options == ["churn", "savings"]
    assert form_features(at) == sorted(churn.feature_names)


def _served_version(api: Api, name: str) -> int | None:
    try:
        r = loopback.get(f"{api.url}/v1/models/{name}", timeout=2)
    except httpx.HTTPError:
        return None
    return r.json().get("version") if r.status_code == 200 else None
