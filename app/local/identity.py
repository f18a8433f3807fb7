"""UI sign-in for `flywheel up`: a local identity signer and two sign-in URLs, one per role.

The signer (an ECDSA P-256 key pair) is made once and kept with the state (`.flywheel/identity/`, git-ignored;
the private key file is 0600). The UI runs with FLYWHEEL_UI_AUTH=local-token and only the public key; the URLs
carry a signed token that the UI verifies, keeps in the browser session and removes from the address bar.
`flywheel identity token --role operator|viewer` makes more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel.access.ui_identity import TOKEN_HOURS, create_signer, mint_token


@dataclass(frozen=True)
class LocalIdentity:
    private_key: Path
    public_key: Path

    def ui_env(self) -> dict[str, str]:
        """What the UI process needs: local-token sign-in, verified with the public key only."""
        return {"FLYWHEEL_UI_AUTH": "local-token", "FLYWHEEL_UI_IDENTITY_PUBLIC_KEY_FILE": str(self.public_key)}

    def sign_in_url(self, ui_url: str, role: str) -> str:
        token = mint_token(self.private_key, role, f"local-{role}", hours=TOKEN_HOURS)
        return f"{ui_url}/?identity={token}"

    def banner(self, ui_url: str) -> list[str]:
        """The banner's UI lines: the two sign-in URLs (valid TOKEN_HOURS) and how to make more."""
        return [
            f"  UI            {ui_url}   (sign in with one of these; valid {TOKEN_HOURS:g} h):",
            f"    operator    {self.sign_in_url(ui_url, 'operator')}",
            f"    viewer      {self.sign_in_url(ui_url, 'viewer')}",
            "    more:       .venv/bin/flywheel identity token --role operator|viewer [--name NAME]",
        ]


def local_identity(state_dir: Path) -> LocalIdentity:
    """The stack's identity signer under <state dir>/identity/, made on first use."""
    private, public = create_signer(state_dir / "identity")
    return LocalIdentity(private, public)
