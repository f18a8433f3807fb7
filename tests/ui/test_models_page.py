"""Models page against moto's S3: versions, gate reasons, chart, promote (with force) and roll back."""

from __future__ import annotations

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from flywheel.registry.store import Registry
from tests.conftest import Stack
from tests.ui.conftest import Signer, open_app, texts, train
from tests.ui.rendered import charts, marks


def chart_data(at: AppTest) -> pd.DataFrame:
    """The data behind the one chart on the page (Arrow IPC inside the Vega-Lite element): version, series, value."""
    found = charts(at)
    assert len(found) == 1, "one metrics chart over versions"
    return found[0][1]


OLGA = "olga (operator, local-token)"


def alias(stack: Stack) -> dict[str, object]:
    doc: dict[str, object] = stack.get_json("models/savings/aliases/production.json")
    return doc


def test_versions_gate_reasons_and_chart(stack: Stack, signer: Signer) -> None:
    assert train(stack, seed=1).status == "promoted"
    rejected = train(stack, seed=2, gate_min_score=0.9999)
    assert rejected.status == "rejected"

    at = open_app("models", identity=signer.token("operator"))

    table = at.dataframe[0].value
    assert sorted(table["version"]) == [1, 2]
    assert dict(zip(table["version"], table["status"], strict=True)) == {1: "production", 2: "rejected"}
    assert dict(zip(table["version"], table["gate"], strict=True)) == {1: "approved", 2: "rejected"}
    assert list(table["signature"]) == ["unsigned", "unsigned"], "no signer configured in these tests"
    assert [m.value for m in at.metric] == ["v1"]
    assert "**savings: serving v1**" in texts(at, "markdown")
    chart = chart_data(at)
    assert sorted(set(chart["series"])) == ["baseline", "candidate", "previous production"]
    points = {(r["version"], r["series"]): r["value"] for r in chart.to_dict("records")}
    for row in table.to_dict("records"):
        assert points[(row["version"], "candidate")] == pytest.approx(row["candidate"])
        assert points[(row["version"], "baseline")] == pytest.approx(row["baseline"])
    previous = table.set_index("version")["previous_production"]  # text: v1 has none, and a missing cell reads —
    assert previous[1] == "—" and float(previous[2]) == pytest.approx(points[(2, "previous production")], abs=1e-4)
    assert (1, "previous production") not in points, "v1 had no production to compare with: no point, not None"
    assert any(m["type"] == "line" and m.get("point") for m in marks(charts(at)[0][0])), "one version still shows"
    # the details of the production version are selected first
    assert at.main.selectbox[0].value == 1
    assert any(t.startswith("- :material/check: passed: r2") for t in texts(at, "markdown"))
    at.main.selectbox[0].select(2).run()
    assert f"- :material/close: {rejected.reasons[0]}" in texts(at, "markdown")
    assert "failed: r2" in rejected.reasons[0] and "vs floor 0.9999" in rejected.reasons[0]
    assert at.checkbox(key="force-savings-2").label.startswith("Force")


def test_promote_needs_force_for_a_rejected_version_then_rollback(stack: Stack, signer: Signer) -> None:
    train(stack, seed=1)
    train(stack, seed=2, gate_tolerance=1.0)  # v2 promoted whatever its score
    assert train(stack, seed=3, gate_min_score=0.9999).status == "rejected"
    assert alias(stack)["version"] == 2

    at = open_app("models", identity=signer.token("operator", "olga"))
    at.main.selectbox[0].select(3).run()
    at.button(key="promote").click().run()
    assert any("v3 was rejected by the gate" in t and "--force" in t for t in texts(at, "error"))
    assert alias(stack)["version"] == 2, "a rejected version does not move the alias without force"

    at.checkbox(key="force-savings-3").check().run()
    at.button(key="promote").click().run()
    assert "savings: production → v3." in texts(at, "success")[0]
    doc = alias(stack)
    assert (doc["version"], doc["previous"], doc["updated_by"]) == (3, 2, OLGA)
    assert doc["reason"] == f"forced by {OLGA} (the gate rejected v3)"
    assert [m.value for m in at.metric] == ["v3"], "the page shows the new production version at once"

    at.button(key="rollback").click().run()
    assert "Rolled back savings: production → v2 (was v3)." in texts(at, "success")[0]
    doc = alias(stack)
    assert (doc["version"], doc["previous"], doc["updated_by"], doc["reason"]) == (2, 3, OLGA, "rollback from v3")
    assert f"Alias moved by {OLGA} at {doc['updated_at']}: rollback from v3" in texts(at, "caption")


def test_rollback_with_nothing_older_shows_why(stack: Stack, signer: Signer) -> None:
    train(stack, seed=1)
    at = open_app("models", identity=signer.token("operator"))
    at.button(key="rollback").click().run()
    assert texts(at, "error") == ["no approved version older than v1 to roll back to"]
    assert alias(stack)["version"] == 1


def test_empty_registry_and_missing_bucket(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app("models")
    assert any("No versions of savings yet" in t for t in texts(at, "info"))
    assert Registry(stack.s3, stack.bucket, "savings").versions() == []
    monkeypatch.delenv("FLYWHEEL_BUCKET")
    st.cache_resource.clear()  # settings are read once per process: start a "new" one
    at = open_app("models")
    assert any("FLYWHEEL_BUCKET is not set" in t for t in texts(at, "info"))
