"""Security review row 3 (issue 22), on real replicas with API keys: a client cannot plant its inputs under
another client's prediction id. Key A predicts `order-1001` on one replica; key B sends the same id with hostile
inputs to another (replicas do not see each other's captures); the operator labels `order-1001` with
`flywheel feedback --train`. Ids are scoped to the key that made them (docs/captures.md, "Ids and keys"): the
captures hold each key's id (never the key), and the label joins neither capture, in the batch under
data/savings/feedback/ and in live quality, and is reported as ambiguous."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flywheel.access import api_keys
from flywheel.cli.main import main
from flywheel.feedback.captures import read
from tests import loopback
from tests.conftest import Stack
from tests.integration.conftest import ROW, Replica, serving_version, train, wait_for

HOSTILE = {**ROW, "income": 99999.0, "expenses": 0.0, "age": 99, "debt": 1999999.0}


def test_an_id_reused_by_another_key_joins_nothing(
    stack: Stack,
    moto_endpoint: str,
    start_replica: Callable[..., Replica],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train(stack)
    key_a, record_a = api_keys.new_key("victim-shop", "client", "test")
    key_b, record_b = api_keys.new_key("attacker", "client", "test")
    store = tmp_path / "api-keys.json"
    api_keys.FileStore(store).save([record_a, record_b])
    env = {"FLYWHEEL_API_AUTH": "api-keys", "FLYWHEEL_API_KEYS_FILE": str(store),
           "FLYWHEEL_CAPTURE_FLUSH_SECONDS": "0.3"}  # fmt: skip
    replicas = [start_replica(stack.bucket, moto_endpoint, **env) for _ in range(2)]
    for r in replicas:
        wait_for(lambda r=r: serving_version(r.url, key_a) == 1, 60, what="v1")

    def send(replica: Replica, key: str, ids: list[str], rows: list[dict[str, object]]) -> None:
        got = loopback.post(replica.url + "/v1/predict", json={"instances": rows, "ids": ids},
                         headers={"Authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
        assert got.status_code == 200 and got.json()["ids"] == ids, got.text

    victim = {**ROW, "income": 3100.0}
    send(replicas[0], key_a, ["order-1001", "order-1002"], [victim, {**ROW, "income": 4200.0}])
    send(replicas[1], key_b, ["order-1001"], [HOSTILE])  # the attack: the victim's id, hostile inputs

    def captured() -> list[dict[str, object]]:
        table = read(stack.s3, stack.bucket, "savings")
        return [] if table is None else table.to_pylist()

    wait_for(lambda: len(captured()) >= 3, 60, what="both replicas' captures written")
    rows = captured()
    assert sorted((r["prediction_id"], r["key_id"]) for r in rows) == sorted(
        [("order-1001", record_a.id), ("order-1002", record_a.id), ("order-1001", record_b.id)])  # fmt: skip
    raw = b"".join(stack.s3.get_object(Bucket=stack.bucket, Key=k)["Body"].read() for k in stack.keys("captures/"))
    assert key_a.encode() not in raw and key_b.encode() not in raw  # the key's id only, never the key

    labels = tmp_path / "orders.csv"
    labels.write_text("id,monthly_savings\norder-1001,750\norder-1002,900\n")
    assert main(["feedback", str(labels), "--model", "savings", "--train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    batch = "data/savings/feedback/orders.csv"
    assert report["batch"] == {"key": batch, "rows": 1, "unmatched": 0, "ambiguous": 1,
                               "ambiguous_ids": ["order-1001"]}  # fmt: skip
    assert stack.keys("data/savings/feedback/") == [batch]
    written = stack.s3.get_object(Bucket=stack.bucket, Key=batch)["Body"].read().decode().splitlines()
    assert len(written) == 2 and written[1].startswith("4200") and written[1].endswith(",900.0")  # order-1002 only
    body = "\n".join(written)
    assert "99999" not in body and "1999999" not in body  # not B's features
    assert "3100" not in body and "750" not in body  # nor A's: the id is ambiguous, it joins nothing

    # the text report names it too
    assert main(["feedback", str(labels), "--model", "savings", "--as", "again", "--train"]) == 0
    text = capsys.readouterr().out
    assert "1 labelled prediction(s)" in text and "1 label(s) left out" in text and "(ambiguous: order-1001)" in text

    # and live quality leaves it out, naming it
    assert main(["quality", "--model", "savings", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["labels"]["ambiguous"] == 1 and q["labels"]["ambiguous_ids"] == ["order-1001"]
    assert q["labels"]["matched"] == 1 and q["versions"][0]["live"]["n"] == 1
