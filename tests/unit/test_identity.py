"""flywheel/access/ui_identity.py: OIDC claims -> role, local identity tokens (mint, verify, refuse), settings."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from flywheel.access.ui_identity import (
    ANONYMOUS_VIEWER,
    Identity,
    IdentityError,
    IdentitySettings,
    create_signer,
    identity_from_claims,
    mint_token,
    role_from_claims,
    verify_token,
)
from flywheel.cli.main import main

SETTINGS = IdentitySettings()


@pytest.fixture(autouse=True)
def _no_ui_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_UI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path]:
    return create_signer(tmp_path / "identity")


def test_label_and_default_mode() -> None:
    assert Identity("u1", "alice@example.com", "operator", "oidc").label == "alice@example.com (operator, oidc)"
    assert IdentitySettings().auth == "viewer-only", "unset: nobody changes production from the UI"
    assert not ANONYMOUS_VIEWER.is_operator


def test_an_expired_oidc_session_is_refused() -> None:
    """Streamlit keeps the claims for 30 days; the ID token's `exp` ends the session (and a group change with it)."""
    claims = {"sub": "u1", "email": "a@example.com", "cognito:groups": ["flywheel-operators"]}
    fresh = identity_from_claims({**claims, "exp": time.time() + 600}, SETTINGS)
    assert fresh.is_operator and not fresh.expired()
    with pytest.raises(IdentityError, match="expired"):
        identity_from_claims({**claims, "exp": time.time() - 1}, SETTINGS)


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["flywheel-operators"], "operator"),
        (["flywheel-viewers"], "viewer"),
        (["flywheel-viewers", "flywheel-operators"], "operator"),  # operator wins
        ("flywheel-operators", "operator"),  # a single group sent as a string
        ("flywheel-viewers", "viewer"),
    ],
)
def test_role_from_groups(groups: object, role: str) -> None:
    assert role_from_claims({"cognito:groups": groups}, SETTINGS) == role


REFUSED = [
    {},
    {"cognito:groups": []},
    {"cognito:groups": ["admins"]},
    {"cognito:groups": "flywheel-operators-x"},
    {"groups": ["flywheel-operators"]},  # the right group in another claim
]


@pytest.mark.parametrize("claims", REFUSED)
def test_neither_group_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(IdentityError, match="neither 'flywheel-operators' nor 'flywheel-viewers'"):
        role_from_claims(claims, SETTINGS)


def test_claim_and_groups_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_UI_ROLE_CLAIM", "groups")
    monkeypatch.setenv("FLYWHEEL_UI_OPERATOR_GROUP", "ml-ops")
    s = IdentitySettings()
    assert role_from_claims({"groups": ["ml-ops"]}, s) == "operator"
    with pytest.raises(IdentityError):
        role_from_claims({"cognito:groups": ["flywheel-operators"]}, s)
    who = identity_from_claims({"sub": "abc", "email": "bob@example.com", "groups": ["flywheel-viewers"]}, s)
    assert who == Identity("abc", "bob@example.com", "viewer", "oidc")
    with pytest.raises(IdentityError, match="no subject"):
        identity_from_claims({"groups": ["ml-ops"]}, s)


def test_settings_need_what_their_mode_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_UI_AUTH", "local-token")
    with pytest.raises(ValidationError, match="FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE"):
        IdentitySettings()
    monkeypatch.setenv("FLYWHEEL_UI_AUTH", "oidc")
    monkeypatch.setenv("FLYWHEEL_UI_OIDC_SECRET_ID", "flywheel/ui-oidc")
    with pytest.raises(ValidationError, match="FLYWHEEL_UI_COOKIE_SECRET_ID"):
        IdentitySettings()
    monkeypatch.setenv("FLYWHEEL_UI_AUTH", "open")
    with pytest.raises(ValidationError):
        IdentitySettings()


def test_signer_files(signer: tuple[Path, Path]) -> None:
    private, public = signer
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = private.read_bytes()
    assert create_signer(private.parent) == signer and private.read_bytes() == before, "kept, not replaced"
    assert b"PRIVATE" not in public.read_bytes()


def test_token_round_trip(signer: tuple[Path, Path]) -> None:
    private, public = signer
    token = mint_token(private, "operator", "alice", hours=1)
    who = verify_token(token, public.read_bytes())
    assert (who.subject, who.name, who.role, who.how) == ("alice", "alice", "operator", "local-token")
    assert who.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"] and not who.expired()
    assert who.expired(now=time.time() + 3601), "the session ends with the token"
    assert who.label == "alice (operator, local-token)"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "flywheel-local" and claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert verify_token(mint_token(private, "viewer", "v"), public.read_bytes()).role == "viewer"


def test_expired_token_is_refused(signer: tuple[Path, Path]) -> None:
    private, public = signer
    token = mint_token(private, "operator", "alice", hours=1, now=time.time() - 7200)
    with pytest.raises(IdentityError, match="expired") as e:
        verify_token(token, public.read_bytes())
    assert token not in e.value.message


def test_token_from_another_key_is_refused(signer: tuple[Path, Path], tmp_path: Path) -> None:
    other_private, _ = create_signer(tmp_path / "other")
    token = mint_token(other_private, "operator", "mallory")
    with pytest.raises(IdentityError, match="not signed by this UI's identity key"):
        verify_token(token, signer[1].read_bytes())


def test_wrong_role_issuer_algorithm_and_garbage_are_refused(signer: tuple[Path, Path]) -> None:
    private, public = signer
    key = private.read_bytes()
    now = int(time.time())
    base = {"iss": "flywheel-local", "sub": "x", "iat": now, "exp": now + 60}
    with pytest.raises(IdentityError, match="unknown role"):
        verify_token(jwt.encode({**base, "role": "admin"}, key, algorithm="ES256"), public.read_bytes())
    with pytest.raises(IdentityError, match="InvalidIssuerError"):
        verify_token(jwt.encode({**base, "iss": "elsewhere", "role": "operator"}, key, algorithm="ES256"),
                     public.read_bytes())  # fmt: skip
    with pytest.raises(IdentityError, match="MissingRequiredClaimError"):
        verify_token(jwt.encode(base, key, algorithm="ES256"), public.read_bytes())
    hs = jwt.encode({**base, "role": "operator"}, "a-shared-secret-long-enough-for-hs256!!", algorithm="HS256")
    with pytest.raises(IdentityError, match="not a valid identity token"):
        verify_token(hs, public.read_bytes())
    with pytest.raises(IdentityError, match="not a valid identity token"):
        verify_token("not-a-token", public.read_bytes())
    with pytest.raises(IdentityError, match="unknown role"):
        mint_token(private, "admin", "x")


def test_cli_prints_a_token(
    signer: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_BUCKET", "unused")  # never pick up a running local stack's settings
    private, public = signer
    assert main(["identity", "token", "--role", "operator", "--name", "ops@local", "--hours", "2",
                 "--key", str(private)]) == 0  # fmt: skip
    who = verify_token(capsys.readouterr().out.strip(), public.read_bytes())
    assert who.label == "ops@local (operator, local-token)"
    assert main(["identity", "token", "--role", "viewer", "--key", str(private.parent / "missing.pem")]) == 2
    assert "no identity signing key" in capsys.readouterr().err


def test_flywheel_up_sign_in_urls(tmp_path: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from app.local.identity import local_identity

    signer = local_identity(tmp_path)
    public = tmp_path / "identity" / "identity-key.pub.pem"
    assert signer.ui_env() == {"FLYWHEEL_UI_AUTH": "local-token", "FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE": str(public)}
    lines = signer.banner("http://127.0.0.1:8501")
    urls = {line.split()[0]: line.split()[1] for line in lines[1:3]}
    for role, url in urls.items():
        parts = urlsplit(url)
        assert (parts.netloc, parts.path) == ("127.0.0.1:8501", "/")
        who = verify_token(parse_qs(parts.query)["identity"][0], signer.public_key.read_bytes())
        assert who.label == f"local-{role} ({role}, local-token)"
    assert set(urls) == {"operator", "viewer"}
    assert local_identity(tmp_path) == signer, "the same signer on the next start"


def test_identity_token_lives_as_long_as_the_banners_urls(
    signer: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`flywheel identity token` said 12 h while the banner's URLs and the README said 24 h: one figure now."""
    private, _ = signer
    assert main(["identity", "token", "--role", "viewer", "--key", str(private)]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 24 * 3600
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "valid for 24 hours" in readme
