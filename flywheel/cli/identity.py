"""`flywheel identity token`: a local sign-in link's token for the UI (FLYWHEEL_UI_AUTH=local-token)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from flywheel.access.ui_identity import TOKEN_HOURS


def default_key_file() -> Path:
    """The signer `flywheel up` makes: <state dir>/identity/identity-key.pem."""
    from flywheel.access.ui_identity import PRIVATE_KEY_NAME

    return Path(os.environ.get("FLYWHEEL_STATE_DIR", ".flywheel")) / "identity" / PRIVATE_KEY_NAME


def cmd_token(args: argparse.Namespace) -> int:
    from flywheel.access.ui_identity import mint_token
    from flywheel.errors import NotFound

    key = Path(args.key) if args.key else default_key_file()
    if not key.is_file():
        raise NotFound(f"no identity signing key at {key}: `flywheel up` makes one, or pass --key FILE")
    token = mint_token(key, args.role, args.name or f"local-{args.role}", hours=args.hours)
    print(token)
    if sys.stderr.isatty():
        print(f"open http://127.0.0.1:8501/?identity=<the token above> (valid {args.hours:g} h)", file=sys.stderr)
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_parsers(add: Any) -> None:
    """`flywheel identity token`, on the main parser's sub-command factory."""
    p: argparse.ArgumentParser = add("identity", lambda args: _usage(p),
            "Local sign-in for the UI (FLYWHEEL_UI_AUTH=local-token): `identity token` prints a token.")  # fmt: skip
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    t = sub.add_parser("token", help="print a signed identity token (open the UI with ?identity=TOKEN)",
                       description="Mint a local identity token (ES256 JWT) for the UI's sign-in URL.")  # fmt: skip
    t.set_defaults(func=cmd_token)
    t.add_argument("--role", required=True, choices=["operator", "viewer"], help="what the holder may do")
    t.add_argument("--name", default="", help="who (recorded on changes; default local-<role>)")
    t.add_argument("--hours", type=float, default=TOKEN_HOURS,
                   help=f"how long the token is valid (default {TOKEN_HOURS:g}, as the banner's URLs)")  # fmt: skip
    t.add_argument("--key", default="", help="private key file (default <state dir>/identity/identity-key.pem)")
