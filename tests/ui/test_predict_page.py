"""Predict page and the served-version notice against a real `flywheel serve` reading moto's S3."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app.ui.api_client import ApiClient, ApiError, ApiUnavailable
from app.ui.form_fields import median_from_profile
from flywheel.registry.operator_actions import promote
from flywheel.registry.store import Registry
from flywheel.schema import load_schema
from tests import loopback
from tests.conftest import Stack
from tests.ui.conftest import Api, open_app, texts, train


def test_form_from_the_schema_predicts_and_names_the_version(stack: Stack, api: Api) -> None:
    train(stack, seed=1)
    api.wait_version(1, timeout=60)
    schema = load_schema("savings")
    public = loopback.get(api.url + "/v1/model", timeout=5).json()["manifest"]
    assert "feature_stats" not in public, "training statistics are for operators; the UI reads the registry"
    manifest = Registry(stack.s3, stack.bucket, "savings").manifest(1)

    at = open_app()

    assert len(at.number_input) + len(at.main.selectbox) == len(schema.features)
    assert sorted(w.label.split(" (")[0] for w in at.number_input) == sorted(schema.numeric)
    assert [w.label for w in at.main.selectbox] == schema.categorical
    region = at.main.selectbox[0]
    assert region.options == list(schema.by_name["region"].categories or ())
    inputs = {w.label.split(" (")[0]: w for w in at.number_input}
    age = inputs["age"]
    assert (age.min, age.max, age.step) == (18, 100, 1)
    for name in schema.numeric:  # defaults: the medians of v1's training data
        expected = median_from_profile(manifest["feature_stats"][name])
        assert expected is not None
        want = round(expected) if schema.by_name[name].integer else expected
        assert inputs[name].value == pytest.approx(want), name
    assert any("v1's training data" in t for t in texts(at, "caption"))

    inputs["income"].set_value(6400.0)
    inputs["credit_score"].set_value(None)  # nullable: empty means missing
    region.select("west")
    at.button(key="FormSubmitter:predict-Predict").click().run()
    assert not at.exception

    (shown,) = texts(at, "success")
    assert "savings v1" in shown and "monthly_savings" in shown
    sent = at.json[0].value
    instance = json.loads(sent)["instances"][0]
    assert instance["income"] == 6400.0 and instance["credit_score"] is None and instance["region"] == "west"
    assert isinstance(instance["age"], int)
    direct = loopback.post(api.url + "/v1/predict", json={"instances": [instance]}, timeout=5).json()
    assert f"{direct['predictions'][0]:,.2f}" in shown, "the UI shows what the API computed"

    # the client names what the API rejected
    with pytest.raises(ApiError) as err:
        ApiClient(api.url).predict("savings", {**instance, "age": 5})
    assert err.value.status == 422 and "age" in err.value.message


def test_api_down_keeps_the_form_and_says_why(stack: Stack) -> None:
    at = open_app()
    warnings = texts(at, "warning")
    assert any("not reachable" in w for w in warnings), warnings
    schema = load_schema("savings")
    assert len(at.number_input) + len(at.main.selectbox) == len(schema.features)
    age = next(w for w in at.number_input if w.label == "age")
    assert age.value == 59, "mid-range default without a served model"
    at.button(key="FormSubmitter:predict-Predict").click().run()
    assert any(w.startswith("No prediction: the prediction API") for w in texts(at, "warning"))
    assert not texts(at, "success")


def test_notice_when_the_served_version_changes(stack: Stack, api: Api) -> None:
    api.wait_alive(timeout=60)
    at = open_app()
    assert any("not ready: no model loaded yet" in w for w in texts(at, "warning"))
    with pytest.raises(ApiUnavailable):
        ApiClient(api.url).served_model("savings")

    train(stack, seed=1)
    assert train(stack, seed=2, gate_min_score=0.9999).status == "rejected"
    api.wait_version(1, timeout=60)
    at.run()
    assert any("Serving **savings v1**" in c and "predictions through the" in c for c in texts(at, "caption"))
    assert not at.toast, "the first version a session sees is not a change"

    # an operator elsewhere (CLI) moves the alias; the replica reloads; the UI notices on its next poll
    promote(Registry(stack.s3, stack.bucket, "savings"), 2, actor="operator", force=True)
    api.wait_version(2, timeout=60)
    at.run()
    assert [t.value for t in at.toast] == ["savings v2 is now serving (was v1)"]
    assert any("savings v1 → v2" in i for i in texts(at, "info"))

    at.run()
    assert not at.toast, "one toast per change"
    at.button(key="dismiss_version_change").click().run()
    assert not any("→" in i for i in texts(at, "info"))
    assert any("Serving **savings v2**" in c for c in texts(at, "caption"))


def _classifier_result() -> None:
    from app.ui.api_client import Prediction
    from app.ui.predict_page import _show
    from flywheel.schema import load_schema

    prediction = Prediction("churn", 7, "yes", {"no": 0.25, "yes": 0.75}, {"contract": "monthly"})
    _show(prediction, load_schema("churn"))


def test_a_classifier_result_shows_label_version_and_probabilities() -> None:
    at = AppTest.from_function(_classifier_result, default_timeout=10).run()
    assert not at.exception
    assert texts(at, "success") == ["**churn v7** predicts churned = **yes**"]
    assert at.get("vega_lite_chart"), "class probabilities chart"
