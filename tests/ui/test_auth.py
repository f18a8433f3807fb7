"""Sign-in and roles in the UI (Streamlit AppTest, moto's S3, real local identity tokens): viewers see no
operator action and the callbacks refuse them even when a button is pressed; operators act and their identity is
recorded on the alias and on the upload."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.ui.auth import SESSION_KEY
from flywheel.access.ui_identity import Identity, create_signer, mint_token
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.ui.conftest import Signer, open_app, texts, train

OPERATOR_KEYS = ("promote", "rollback")
VIEWER = Identity("test-viewer", "test-viewer", "viewer", "local-token")


def alias(stack: Stack) -> dict[str, object]:
    doc: dict[str, object] = stack.get_json("models/savings/aliases/production.json")
    return doc


def keys(at: AppTest) -> set[str]:
    """Keys of every button and checkbox on the page."""
    return {w.key for w in [*at.button, *at.checkbox] if w.key}


def no_operator_actions(at: AppTest) -> None:
    assert not keys(at) & {*OPERATOR_KEYS, "force-savings-2", "upload-batch"}, keys(at)
    assert not at.file_uploader


def two_versions(stack: Stack, tmp_path: Path) -> None:
    """v1 promoted and signed; v2 rejected by the gate, unsigned."""
    private, _ = create_signer(tmp_path / "trainer")
    train(stack, seed=1, signing_key_file=str(private))
    assert train(stack, seed=2, gate_min_score=0.9999).status == "rejected"


def test_viewer_only_by_default_shows_no_operator_action(stack: Stack, tmp_path: Path) -> None:
    two_versions(stack, tmp_path)
    at = open_app("models")
    assert at.sidebar.markdown[0].value == "**Viewer**"
    assert any("operators upload, promote and roll back with the CLI" in t for t in texts(at, "caption"))
    at.main.selectbox[0].select(2).run()
    no_operator_actions(at)
    assert any("for operators" in t for t in texts(at, "info"))
    table = at.dataframe[0].value
    assert dict(zip(table["version"], table["signature"], strict=True)) == {1: "signed", 2: "unsigned"}
    assert any("signature **unsigned**" in t for t in texts(at, "caption")), "v2 is chosen: its details say so"
    at = open_app("data")
    no_operator_actions(at)
    assert any("is for operators" in t for t in texts(at, "caption"))


def test_local_token_needs_a_valid_token(signer: Signer, tmp_path: Path) -> None:
    at = open_app()
    assert any("Not signed in" in t for t in texts(at, "error"))
    assert not at.sidebar.selectbox and not at.button, "nothing else until signed in"

    expired = mint_token(signer.private, "operator", "late", hours=1, now=0)
    other, _ = create_signer(tmp_path / "other")
    refused = [(expired, "expired"), (mint_token(other, "operator", "m"), "not signed by this UI's identity key"),
               ("garbage", "not a valid identity token")]  # fmt: skip
    for token, why in refused:
        at = open_app(identity=token)
        errors = texts(at, "error")
        assert len(errors) == 1 and why in errors[0] and token not in errors[0], errors
        assert not at.sidebar.selectbox and not at.button and not at.dataframe
        assert SESSION_KEY not in at.session_state


def test_token_is_taken_once_and_removed_from_the_url(stack: Stack, signer: Signer) -> None:
    at = open_app(identity=signer.token("viewer", "vera"))
    assert "identity" not in at.query_params
    who = at.session_state[SESSION_KEY]
    assert (who.subject, who.name, who.role, who.how) == ("vera", "vera", "viewer", "local-token") and who.expires_at
    assert at.sidebar.markdown[0].value == "**Signed in:** vera  \nviewer · local-token"
    at.button(key="sign-out").click().run()
    assert any("Not signed in" in t for t in texts(at, "error"))


def test_viewer_token_sees_no_operator_action(stack: Stack, signer: Signer, tmp_path: Path) -> None:
    two_versions(stack, tmp_path)
    at = open_app("models", identity=signer.token("viewer"))
    at.main.selectbox[0].select(2).run()
    no_operator_actions(at)
    at.switch_page("views/data.py").run()
    no_operator_actions(at)


@pytest.mark.parametrize("what", ["promote", "force", "rollback"])
def test_callbacks_refuse_a_viewer_even_when_the_button_is_pressed(
    stack: Stack, signer: Signer, tmp_path: Path, what: str
) -> None:
    two_versions(stack, tmp_path)
    train(stack, seed=3, gate_tolerance=1.0)  # v3 promoted: v1 <- v3 to roll back to
    before = alias(stack)
    at = open_app("models", identity=signer.token("operator"))
    at.main.selectbox[0].select(2 if what != "rollback" else 3).run()
    if what == "force":
        at.checkbox(key="force-savings-2").check().run()
    at.session_state[SESSION_KEY] = VIEWER  # the role changes after the page drew its buttons
    at.button(key="rollback" if what == "rollback" else "promote").click().run()
    assert any("Only an operator can" in t for t in texts(at, "error")), texts(at, "error")
    assert alias(stack) == before, "nothing moved"


def test_upload_callback_refuses_a_viewer(stack: Stack, signer: Signer) -> None:
    at = open_app("data", identity=signer.token("operator"))
    at.file_uploader[0].set_value(("x.csv", csv_bytes(20, seed=1), "text/csv"))
    at.session_state[SESSION_KEY] = VIEWER
    at.button(key="upload-batch").click().run()
    assert texts(at, "error") == ["Only an operator can upload a batch. You are signed in as a viewer."]
    assert stack.keys("data/") == []


def test_operator_upload_is_recorded_and_listed(stack: Stack, signer: Signer) -> None:
    at = open_app("data", identity=signer.token("operator", "Zoë"))
    at.file_uploader[0].set_value(("x.csv", csv_bytes(20, seed=1), "text/csv"))
    at.button(key="upload-batch").click().run()
    assert "by Zoë (operator, local-token)" in texts(at, "success")[0]
    meta = stack.s3.head_object(Bucket=stack.bucket, Key="data/savings/x.csv")["Metadata"]
    assert meta["uploaded-by"] == "Zo%C3%AB (operator, local-token)", "S3 metadata is ASCII: percent-encoded"
    stack.put("data/savings/by-hand.csv", csv_bytes(20, seed=2))
    st.cache_data.clear()  # the batch listing is cached for 10 s
    at = open_app("data", identity=signer.token("operator", "Zoë"))
    batches = at.dataframe[0].value
    assert dict(zip(batches["key"], batches["uploaded by"], strict=True)) == {
        "data/savings/x.csv": "Zoë (operator, local-token)",
        "data/savings/by-hand.csv": "—",
    }


OIDC_ENV = {"FLYWHEEL_UI_AUTH": "oidc", "FLYWHEEL_UI_OIDC_SECRET_ID": "flywheel/ui-oidc",
            "FLYWHEEL_UI_COOKIE_SECRET_ID": "flywheel/ui-cookie"}  # fmt: skip


def oidc_app(monkeypatch: pytest.MonkeyPatch, user: dict[str, object], page: str = "models") -> AppTest:
    for k, v in OIDC_ENV.items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app" / "ui" / "main.py"), default_timeout=30)
    at.user = user
    at.run()
    if page and at.sidebar.selectbox:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_oidc_operator_group_promotes_and_is_recorded(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(stack, seed=1)
    train(stack, seed=2, gate_tolerance=1.0)
    user = {"is_logged_in": True, "sub": "u-1", "email": "alice@example.com",
            "cognito:groups": ["flywheel-viewers", "flywheel-operators"]}  # fmt: skip
    at = oidc_app(monkeypatch, user)
    assert at.sidebar.markdown[0].value == "**Signed in:** alice@example.com  \noperator · oidc"
    at.button(key="rollback").click().run()
    doc = alias(stack)
    assert (doc["version"], doc["updated_by"]) == (1, "alice@example.com (operator, oidc)")


def test_oidc_viewer_outsider_and_signed_out(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    train(stack, seed=1)
    viewer = {"is_logged_in": True, "sub": "u-2", "email": "v@example.com", "cognito:groups": "flywheel-viewers"}
    no_operator_actions(oidc_app(monkeypatch, viewer))
    at = oidc_app(monkeypatch, {"is_logged_in": True, "sub": "u-3", "email": "x@example.com", "cognito:groups": []})
    assert any("neither 'flywheel-operators' nor 'flywheel-viewers'" in t for t in texts(at, "error"))
    assert [b.label for b in at.button] == ["Sign out"] and not at.dataframe
    at = oidc_app(monkeypatch, {"is_logged_in": False}, page="")
    assert [b.label for b in at.button] == ["Sign in"] and not at.dataframe
