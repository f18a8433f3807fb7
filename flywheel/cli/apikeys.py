"""`flywheel apikey create|list|revoke`: the prediction API's keys (flywheel/access/api_keys.py).

The store is FLYWHEEL_API_KEYS_FILE (what `flywheel up` uses) or FLYWHEEL_API_KEYS_SECRET_ID (the stack's
Secrets Manager secret, output `ApiKeysSecretArn`), or --file / --secret-id. A new key is printed once; only its
SHA-256 is stored. Replicas reload the store every FLYWHEEL_API_KEYS_REFRESH_SECONDS (60 s by default).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from flywheel.errors import FlywheelError


def key_store(file: str | None = None, secret_id: str | None = None) -> Any:
    """The key store: `file` or `secret_id` when given, else FLYWHEEL_API_KEYS_FILE / _SECRET_ID (also used by
    `flywheel traffic`). None when nothing names one."""
    from flywheel.access import api_keys
    from flywheel.storage import secrets_client

    file = file or (None if secret_id else os.environ.get("FLYWHEEL_API_KEYS_FILE"))
    secret = secret_id or (None if file else os.environ.get("FLYWHEEL_API_KEYS_SECRET_ID"))
    return api_keys.store_from(file, secret, secrets_client)


def refresh_note() -> str:
    """When a key created or revoked now takes effect: the replicas' reload interval, as far as this shell knows."""
    seconds = os.environ.get("FLYWHEEL_API_KEYS_REFRESH_SECONDS")
    every = f"{seconds} s in this environment" if seconds else "60 s unless the replicas set it"
    return f"within FLYWHEEL_API_KEYS_REFRESH_SECONDS ({every})"


def _store(args: argparse.Namespace) -> Any:
    store = key_store(args.file, args.secret_id)
    if store is None:
        raise FlywheelError("no key store: set FLYWHEEL_API_KEYS_FILE or FLYWHEEL_API_KEYS_SECRET_ID, or pass "
                            "--file / --secret-id (the stack's output ApiKeysSecretArn)")  # fmt: skip
    return store


def cmd_create(args: argparse.Namespace) -> int:
    from flywheel.access import api_keys
    from flywheel.cli.models import actor

    store = _store(args)
    key, record = api_keys.new_key(args.name, args.role, actor())

    def add(records: list[api_keys.KeyRecord]) -> list[api_keys.KeyRecord]:
        if any(r.name == args.name for r in records):
            raise FlywheelError(f"a key named {args.name!r} exists; revoke it first or choose another name")
        return [*records, record]

    api_keys.update(store, add)  # under the store's lock (file) or version check (secret): nothing undone
    print(f"created key {record.id} ({record.name}, {record.role}) in {store.source}")
    print(f"it works once the replicas reload the store, {refresh_note()}; until then it gets 401")
    print("the key (shown once; send it as `Authorization: Bearer <key>`):")
    print(key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).load()
    if args.json:
        print(json.dumps([{k: v for k, v in vars(r).items() if k != "sha256"} for r in records], indent=2))
        return 0
    print(f"{'id':10} {'role':9} {'name':24} {'created':26} by")
    for r in records:
        print(f"{r.id:10} {r.role:9} {r.name:24} {r.created_at:26} {r.created_by}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from flywheel.access import api_keys

    store = _store(args)

    def drop(records: list[api_keys.KeyRecord]) -> list[api_keys.KeyRecord]:
        kept = [r for r in records if r.id != args.id]
        if len(kept) == len(records):
            raise FlywheelError(f"no key with id {args.id!r} in {store.source} (see `flywheel apikey list`)")
        return kept

    api_keys.update(store, drop)
    print(f"revoked key {args.id}; the replicas refuse it once they reload the store, {refresh_note()}")
    return 0


def add_parsers(add: Any) -> None:
    p = add("apikey", lambda _: 2, "Create, list and revoke the prediction API's keys (stored hashed).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--file", help="key store file (default: $FLYWHEEL_API_KEYS_FILE)")
        q.add_argument("--secret-id", help="key store secret (default: $FLYWHEEL_API_KEYS_SECRET_ID)")

    c = sub.add_parser("create", help="create a key and print it once", description="Create an API key.")
    c.add_argument("--name", required=True, help="who or what uses the key (unique)")
    c.add_argument("--role", default="client", choices=["client", "operator"],
                   help="client: predict and read a model's public description; operator: also the full "
                        "manifest (golden rows, lineage)")  # fmt: skip
    common(c)
    c.set_defaults(func=cmd_create)
    ls = sub.add_parser("list", help="list keys (ids, names, roles; never the keys)", description="List API keys.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    common(ls)
    ls.set_defaults(func=cmd_list)
    r = sub.add_parser("revoke", help="remove a key by id", description="Revoke an API key.")
    r.add_argument("id", help="the key's id (flywheel apikey list)")
    common(r)
    r.set_defaults(func=cmd_revoke)
