"""Who is signed in to the UI, and with which role: OIDC claims or a local identity token -> an Identity.

Two roles: viewer (predict, browse) and operator (upload, promote, roll back, force). Three ways in
(FLYWHEEL_UI_AUTH): `oidc` (Streamlit's native sign-in; the role comes from a groups claim), `local-token`
(`flywheel up`: an ES256 JWT signed by a key kept in the state directory, opened once from a sign-in URL) and
`viewer-only` (the default: everybody is a viewer; nobody changes production from the UI).

The core knows nothing about Streamlit: app/ui/auth.py turns a session into an Identity with these functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import jwt
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.errors import FlywheelError

Role = Literal["viewer", "operator"]
Mode = Literal["oidc", "local-token", "viewer-only"]
ROLES: tuple[str, ...] = get_args(Role)
ISSUER = "flywheel-local"
ALGORITHM = "ES256"
MAX_TOKEN_HOURS = 24 * 30
TOKEN_HOURS = 24.0  # a local sign-in token's life: the banner's URLs and `flywheel identity token`
PRIVATE_KEY_NAME, PUBLIC_KEY_NAME = "identity-key.pem", "identity-key.pub.pem"


class IdentityError(FlywheelError):
    """Sign-in refused: an invalid or expired token, or an account in neither role's group."""

    status = 403


@dataclass(frozen=True)
class Identity:
    """A signed-in person (or the anonymous viewer) and how they signed in."""

    subject: str
    name: str
    role: Role
    how: str
    expires_at: float | None = None  # epoch seconds: the token's `exp`; a session ends with it

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    @property
    def label(self) -> str:
        """What is recorded on every change: "<name> (<role>, <how>)"."""
        return f"{self.name} ({self.role}, {self.how})"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


ANONYMOUS_VIEWER = Identity(subject="anonymous", name="anonymous", role="viewer", how="viewer-only")


class IdentitySettings(BaseSettings):
    """The UI's sign-in settings (FLYWHEEL_UI_*, docs/settings.md). Unset means viewer-only."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_UI_", extra="ignore")

    auth: Mode = "viewer-only"
    oidc_secret_id: str | None = None
    cookie_secret_id: str | None = None
    role_claim: str = Field(default="cognito:groups", min_length=1)
    operator_group: str = Field(default="flywheel-operators", min_length=1)
    viewer_group: str = Field(default="flywheel-viewers", min_length=1)
    identity_public_key_file: str | None = None

    @model_validator(mode="after")
    def _mode_needs(self) -> IdentitySettings:
        if self.auth == "local-token" and not self.identity_public_key_file:
            raise ValueError("FLYWHEEL_UI_AUTH=local-token needs FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE")
        if self.auth == "oidc":
            missing = [n for n, v in (("FLYWHEEL_UI_OIDC_SECRET_ID", self.oidc_secret_id),
                                      ("FLYWHEEL_UI_COOKIE_SECRET_ID", self.cookie_secret_id)) if not v]  # fmt: skip
            if missing:
                raise ValueError(f"FLYWHEEL_UI_AUTH=oidc needs {' and '.join(missing)}")
        return self


# -- OIDC claims ------------------------------------------------------------------------------------
def _groups(value: Any) -> list[str]:
    """A groups claim as a list: a JSON list, or one string (some issuers send a single group as a string)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return []


def role_from_claims(claims: Mapping[str, Any], settings: IdentitySettings) -> Role:
    """operator if the role claim holds the operator group, else viewer if it holds the viewer group (operator
    wins when both); in neither, sign-in is refused."""
    groups = _groups(claims.get(settings.role_claim))
    if settings.operator_group in groups:
        return "operator"
    if settings.viewer_group in groups:
        return "viewer"
    raise IdentityError(
        f"signed in, but not allowed in: the account is in neither {settings.operator_group!r} nor "
        f"{settings.viewer_group!r} (claim {settings.role_claim!r}); ask an administrator to add it to one",
        claim=settings.role_claim,
    )


def identity_from_claims(claims: Mapping[str, Any], settings: IdentitySettings) -> Identity:
    """The Identity of an OIDC user (Streamlit's st.user): subject `sub`, shown by e-mail or username."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise IdentityError("the identity provider sent no subject ('sub' claim)")
    name = next((str(claims[k]) for k in ("email", "preferred_username", "cognito:username", "name")
                 if claims.get(k)), subject)  # fmt: skip
    # Streamlit keeps the claims in a cookie for 30 days: the ID token's own expiry ends the session instead, so
    # a user removed from a group (or disabled) loses the role when the token expires (1 h with Cognito)
    exp = claims.get("exp")
    expires = float(exp) if isinstance(exp, int | float) else None
    who = Identity(subject=subject, name=name, role=role_from_claims(claims, settings), how="oidc", expires_at=expires)
    if who.expired():
        raise IdentityError("your sign-in has expired; sign out and sign in again")
    return who


# -- local identity tokens ----------------------------------------------------------------------------
def create_signer(directory: Path) -> tuple[Path, Path]:
    """The local identity signer's (private, public) PEM files in `directory`, made on first use (an ECDSA
    P-256 pair; the private key file is mode 0600 and never overwritten)."""
    from flywheel.registry.signing import generate_key_pair

    private, public = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if not (private.exists() and public.exists()):
        private.unlink(missing_ok=True)
        generate_key_pair(private, public)
    return private, public


def mint_token(
    private_key_file: Path, role: str, name: str, hours: float = TOKEN_HOURS, now: float | None = None
) -> str:
    """A local identity token (ES256 JWT, issuer flywheel-local) for `name` with `role`, valid `hours`."""
    if role not in ROLES:
        raise IdentityError(f"unknown role {role!r}; choose from {list(ROLES)}")
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise IdentityError(f"hours must be above 0 and at most {MAX_TOKEN_HOURS}")
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "sub": name, "name": name, "role": role, "iat": issued, "exp": issued + int(hours * 3600)}
    return jwt.encode(claims, private_key_file.read_bytes(), algorithm=ALGORITHM)


def verify_token(token: str, public_key_pem: bytes) -> Identity:
    """The Identity a local token vouches for; IdentityError (never the token itself) when it is expired,
    signed by another key, from another issuer or without a known role."""
    try:
        claims = jwt.decode(token, public_key_pem, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iss", "sub", "role"]})  # fmt: skip
    except jwt.ExpiredSignatureError as e:
        raise IdentityError("this sign-in link has expired: make a new one (flywheel identity token)") from e
    except jwt.InvalidSignatureError as e:
        raise IdentityError("this sign-in link was not signed by this UI's identity key") from e
    except jwt.InvalidTokenError as e:
        raise IdentityError(f"this sign-in link is not a valid identity token ({type(e).__name__})") from e
    role = claims["role"]
    if role not in ROLES:
        raise IdentityError(f"this sign-in link carries an unknown role {str(role)[:20]!r}")
    name = str(claims.get("name") or claims["sub"])
    return Identity(subject=str(claims["sub"]), name=name, role=role, how="local-token",
                    expires_at=float(claims["exp"]))  # fmt: skip
