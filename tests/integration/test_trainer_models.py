"""Several models in one bucket: data/<name>/ trains model <name>, each under its own lock (issue 11)."""

from __future__ import annotations

import pytest

from flywheel.errors import ConflictError
from flywheel.names import model_of_batch_key
from flywheel.registry.registrations import models, register, registered, schema_of
from flywheel.registry.store import Registry
from flywheel.schema import load_schema
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from lambdas.trainer.events import parse_event
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.trainer_helpers import fresh_handler, invoke


@pytest.fixture(autouse=True)
def _fresh_handler_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_handler(monkeypatch, FLYWHEEL_ESTIMATORS="linear", FLYWHEEL_CV_FOLDS="2")


@pytest.fixture
def two_models(stack: Stack) -> Stack:
    register(stack.s3, stack.bucket, "savings", load_schema("savings"))
    register(stack.s3, stack.bucket, "churn", load_schema("churn"))
    return stack


def versions(stack: Stack, name: str) -> list[int]:
    return Registry(s3_client(), stack.bucket, name).versions()


def test_registration_is_create_only_and_a_schema_never_changes(stack: Stack) -> None:
    assert register(stack.s3, stack.bucket, "churn", load_schema("churn")) is True
    assert register(stack.s3, stack.bucket, "churn", load_schema("churn")) is False  # the same again: no-op
    with pytest.raises(ConflictError, match="never changes"):
        register(stack.s3, stack.bucket, "churn", load_schema("savings"))
    assert schema_of(stack.s3, stack.bucket, "churn").name == load_schema("churn").name
    with pytest.raises(ConflictError, match="invalid model name"):
        register(stack.s3, stack.bucket, "Bad_Name", load_schema("churn"))
    assert list(registered(stack.s3, stack.bucket)) == ["churn"]
    # the default model of the settings counts even before it is registered (a bucket laid out the old way)
    assert list(models(stack.s3, TrainerSettings())) == ["churn", "savings"]


def test_keys_route_by_folder() -> None:
    s = TrainerSettings(bucket="b-x-y")
    assert model_of_batch_key("data/churn/jan.csv", s) == "churn"
    assert model_of_batch_key("data/churn/2026/jan.csv", s) == "churn"
    assert model_of_batch_key("data/jan.csv", s) == "savings"  # the old layout: the default model
    assert model_of_batch_key("models/x", s) is None


def test_one_delivery_with_batches_for_two_models_trains_each_only_on_its_own(two_models: Stack) -> None:
    stack = two_models
    stack.put("data/savings/a.csv", csv_bytes(800, seed=1))
    stack.put("data/churn/a.csv", csv_bytes(800, seed=1, dataset="churn"))
    assert invoke(stack) == {"batchItemFailures": []}
    assert versions(stack, "savings") == [1] and versions(stack, "churn") == [1]
    churn = stack.get_json("models/churn/versions/000001/manifest.json")
    assert churn["task"] == "classification" and [b["key"] for b in churn["data"]["batches"]] == ["data/churn/a.csv"]
    savings = stack.get_json("models/savings/versions/000001/manifest.json")
    assert [b["key"] for b in savings["data"]["batches"]] == ["data/savings/a.csv"]


def test_a_bad_batch_for_one_model_leaves_the_other_training(two_models: Stack) -> None:
    stack = two_models
    stack.put("data/churn/bad.csv", csv_bytes(100, seed=1))  # a savings file dropped into churn's folder
    stack.put("data/savings/good.csv", csv_bytes(800, seed=2))
    assert invoke(stack) == {"batchItemFailures": []}
    assert versions(stack, "savings") == [1] and versions(stack, "churn") == []
    report = stack.get_json("quarantine/churn/bad.csv.error.json")
    assert report["file"] == "data/churn/bad.csv" and report["problems"][0]["check"] == "header"


def test_a_failing_model_fails_only_its_own_messages(two_models: Stack) -> None:
    stack = two_models
    stack.put("data/savings/good.csv", csv_bytes(800, seed=2))
    stack.put("data/churn/a.csv", csv_bytes(800, seed=1, dataset="churn"))
    records = stack.receive()
    Registry(s3_client(), stack.bucket, "churn").claim("someone-else", 600)  # churn's trainer is busy
    result = invoke(stack, records)
    churn_ids = [m.message_id for m in parse_event({"Records": records}) if any("churn/" in o.key for o in m.objects)]
    assert len(churn_ids) == 1
    assert result == {"batchItemFailures": [{"itemIdentifier": i} for i in churn_ids]}
    assert versions(stack, "savings") == [1] and versions(stack, "churn") == []


def test_a_batch_for_no_registered_model_is_quarantined_naming_the_registered_ones(two_models: Stack) -> None:
    stack = two_models
    stack.put("data/fraud/a.csv", csv_bytes(50, seed=1))
    assert invoke(stack) == {"batchItemFailures": []}
    assert stack.keys("data/") == []
    report = stack.get_json("quarantine/fraud/a.csv.error.json")
    (problem,) = report["problems"]
    assert problem["check"] == "model"
    assert "'fraud' is not a registered model (registered: ['churn', 'savings'])" in problem["message"]


def test_an_old_layout_bucket_still_trains_its_default_model(stack: Stack) -> None:
    stack.put("data/batch-001.csv", csv_bytes(800, seed=1))  # straight under data/, nothing registered
    assert invoke(stack) == {"batchItemFailures": []}
    assert versions(stack, "savings") == [1]
    assert schema_of(stack.s3, stack.bucket, "savings").name == load_schema("savings").name  # registered now
    stack.put("data/savings/batch-002.csv", csv_bytes(800, seed=2, drift=1.0))  # the new layout, same model
    assert invoke(stack) == {"batchItemFailures": []}
    m = stack.get_json("models/savings/versions/000002/manifest.json")
    assert [b["key"] for b in m["data"]["batches"]] == ["data/batch-001.csv", "data/savings/batch-002.csv"]
