"""Data page against moto's S3: the upload lands under data/<model>/ (and notifies the queue), batches and
quarantine, in a bucket laid out the old way (one model, CSVs directly under data/)."""

from __future__ import annotations

from flywheel.jobs.retrain import retrain
from flywheel.settings import TrainerSettings
from flywheel.storage import s3_client
from lambdas.trainer.events import parse_event, relevant
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.ui.conftest import Signer, open_app, texts


def upload(stack: Stack, token: str, name: str, data: bytes, save_as: str = "", kind: str = "success") -> list[str]:
    at = open_app("data", identity=token)
    at.file_uploader[0].set_value((name, data, "text/csv"))
    if save_as:
        at.text_input[0].set_value(save_as)
    at.button(key="upload-batch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return texts(at, kind)


def test_upload_puts_the_csv_under_the_models_folder_and_the_bucket_notifies_the_trainer(
    stack: Stack, signer: Signer
) -> None:
    data = csv_bytes(50, seed=4)
    token = signer.token("operator", "olga")
    messages = upload(stack, token, "my batch.csv", data)
    assert stack.keys("data/") == ["data/savings/my-batch.csv"]
    obj = stack.s3.get_object(Bucket=stack.bucket, Key="data/savings/my-batch.csv")
    assert obj["Body"].read() == data and obj["ContentType"] == "text/csv"
    assert obj["Metadata"] == {"uploaded-by": "olga (operator, local-token)", "uploaded-via": "flywheel-ui"}
    assert f"s3://{stack.bucket}/data/savings/my-batch.csv" in messages[0]
    # the queue holds the same S3 notification as for any other drop, and the trainer's parser takes it
    picked = relevant(parse_event({"Records": stack.receive()}), "data/")
    assert [(o.bucket, o.key) for o in picked] == [(stack.bucket, "data/savings/my-batch.csv")]

    # the same name again is refused (a create-only write), never written over the first
    errors = upload(stack, token, "my batch.csv", csv_bytes(50, seed=5), kind="error")
    assert "data/savings/my-batch.csv already exists" in errors[0] and "Save as" in errors[0]
    assert stack.keys("data/") == ["data/savings/my-batch.csv"]
    assert stack.s3.get_object(Bucket=stack.bucket, Key="data/savings/my-batch.csv")["Body"].read() == data
    # ... and lands beside it under the name the user chose
    upload(stack, token, "my batch.csv", csv_bytes(50, seed=5), save_as="second try")
    assert stack.keys("data/") == ["data/savings/my-batch.csv", "data/savings/second-try.csv"]


def test_batches_and_quarantine_reasons(stack: Stack) -> None:
    stack.put("data/good.csv", csv_bytes(600, seed=1))
    stack.put("data/bad.csv", b"income,expenses\n1,2\n")
    outcome = retrain(TrainerSettings(bucket=stack.bucket, estimators="linear", cv_folds=2), s3_client())
    assert outcome.status == "promoted" and [q.key for q in outcome.quarantined] == ["data/bad.csv"]
    report = stack.get_json("quarantine/bad.csv.error.json")

    at = open_app("data")

    assert at.selectbox(key="model").options == ["savings"], "one model: the default one"
    assert any(c == "Under data/savings/ and data/*" for c in texts(at, "caption"))
    batches = at.dataframe[0].value
    assert list(batches["key"]) == ["data/good.csv"]
    assert list(batches["in v1"]) == [True]
    assert batches["size"][0].endswith("KB")
    assert report["error"] in texts(at, "error"), "the reason from the .error.json report"
    problems = at.dataframe[1].value
    assert list(problems["message"]) == [p["message"] for p in report["problems"]]
    assert any("missing" in m for m in problems["message"])
    assert any("quarantine/bad.csv.error.json" in t for t in texts(at, "caption"))
