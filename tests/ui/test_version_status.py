"""Where each version stands, on the Models page and in every page's status line (issue 23, item 7): a rollout's
candidate reads `canary` or `shadow`, and the page names the version serving and the candidate apart."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests import loopback
from tests.conftest import Stack
from tests.helpers import eventually
from tests.ui.conftest import Api, Signer, open_app, texts, train

CANARY = {"gate_tolerance": 1.0, "rollout_mode": "canary", "rollout_share": 0.2}


def statuses(at: AppTest) -> dict[int, str]:
    table = at.dataframe[0].value
    return dict(zip(table["version"], table["status"], strict=True))


def test_a_canary_candidate_is_canary_until_promoted(stack: Stack, signer: Signer) -> None:
    train(stack, seed=1)
    assert train(stack, seed=2, **CANARY).status == "rollout"

    at = open_app("models", identity=signer.token("operator", "olga"))

    assert statuses(at) == {1: "production", 2: "canary"}
    assert "**savings: serving v1 · canary v2 (20% of keys)**" in texts(at, "markdown")
    assert [(m.label, m.value) for m in at.metric] == [("In production", "v1"), ("Canary candidate", "v2")]
    at.main.selectbox[0].select(2).run()
    assert any(t.startswith("**Gate: approved**") and "now **canary**" in t for t in texts(at, "markdown"))

    at.button(key="rollout-promote").click().run()
    assert statuses(at) == {1: "was production", 2: "production"}
    assert "**savings: serving v2**" in texts(at, "markdown")
    assert [(m.label, m.value) for m in at.metric] == [("In production", "v2")]


def test_an_aborted_candidate_stays_aborted_after_the_next_rollout(stack: Stack, signer: Signer) -> None:
    train(stack, seed=1)
    train(stack, seed=2, **CANARY)
    at = open_app("models", identity=signer.token("operator", "olga"))
    at.button(key="rollout-abort").click().run()
    assert statuses(at) == {1: "production", 2: "aborted"}
    train(stack, seed=3, **{**CANARY, "rollout_mode": "shadow", "rollout_share": 1.0})
    next(b for b in at.button if b.label == "Refresh").click().run()  # the page's reads are cached for 10 s
    assert statuses(at) == {1: "production", 2: "aborted", 3: "shadow"}, "v2's abort is in its history"
    assert "**savings: serving v1 · shadow v3 (runs on 100% of requests)**" in texts(at, "markdown")


def test_the_status_line_names_the_served_version_and_the_candidate(stack: Stack, api: Api) -> None:
    train(stack, seed=1)
    api.wait_version(1, timeout=60)
    train(stack, seed=2, **CANARY)
    eventually(lambda: loopback.get(api.url + "/v1/models/savings", timeout=5).json().get("rollout"), timeout=60,
               what="the replica serving the canary beside v1")  # fmt: skip

    at = open_app()

    line = next(t for t in texts(at, "caption") if t.startswith("Serving "))
    assert line.startswith("Serving **savings v1** · **canary v2 (20% of keys)** ("), line
