"""`flywheel models [add]`, `promote`, `rollback`: the registry side of the CLI, one model or all of them."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def actor() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "operator"


def core(args: argparse.Namespace, cls: Any = None) -> Any:
    """Settings from the environment, with --bucket when given (`cls`: a richer settings class)."""
    from flywheel.settings import CoreSettings

    return (cls or CoreSettings)(**({"bucket": args.bucket} if args.bucket else {}))


def registry(args: argparse.Namespace) -> Any:
    from flywheel.names import check_name
    from flywheel.registry.store import Registry
    from flywheel.storage import s3_client

    s = core(args)
    return Registry(s3_client(), s.bucket, check_name(args.model or s.model_name), s.models_prefix)


def _table(name: str, schema: Any, found: Any) -> None:
    rows = found.rows
    print(f"{name} ({schema.task}, schema {schema.name!r})" + (f": {found.serving}" if rows else ""))
    if not rows:
        print(f"  no versions yet: drop a batch (flywheel drop FILE --model {name})\n")
        return
    print(f"{'':2}{'version':>7}  {'status':14} {'estimator':9} {'metric':17} {'cand':>8} {'prod':>8} {'naive':>8} "
          f"{'rows':>9}  {'signature':9}  created")  # fmt: skip
    for r in rows:
        prev = "" if r["previous_production"] is None else f"{r['previous_production']:.4f}"
        mark = "* " if r["production"] else "  "
        print(f"{mark}{r['version']:>7}  {r['status']:14} {r['estimator']:9} {r['metric']:17} {r['candidate']:>8.4f} "
              f"{prev:>8} {r['baseline']:>8.4f} {r['rows']:>9}  {r['signature']:9}  "
              f"{r['created_at']}")  # fmt: skip
    print()


def cmd_models(args: argparse.Namespace) -> int:
    from flywheel.registry.registrations import models
    from flywheel.registry.store import Registry
    from flywheel.release.version_status import listing
    from flywheel.storage import s3_client

    if getattr(args, "action", None) == "add":
        return cmd_models_add(args)
    if args.history is not None:
        return cmd_history(args)
    s, s3 = core(args), s3_client()
    found = models(s3, s)
    names = [args.model] if args.model else list(found)
    if args.model and args.model not in found:
        from flywheel.errors import NotFound

        raise NotFound(f"model {args.model!r} is not registered (registered: {sorted(found)})")
    from flywheel.registry.signing import verifier

    check = verifier(os.environ.get("FLYWHEEL_VERIFY_KMS_KEY_ID"), os.environ.get("FLYWHEEL_VERIFY_PUBLIC_KEY_FILE"))
    listed = {n: listing(Registry(s3, s.bucket, n, s.models_prefix), check) for n in names}
    if args.json:  # one model: its versions; all: {model: versions}
        rows = {n: found.rows for n, found in listed.items()}
        print(json.dumps(rows[args.model] if args.model else rows, indent=2))
        return 0
    for n in names:
        _table(n, found[n], listed[n])
    print(
        "* = production. status: production, canary or shadow (a running rollout's candidate), was production, "
        "aborted (its rollout), approved (passed the gate, never served), rejected (failed the gate); "
        "docs/rollouts.md, 'Version status'. "
        "'prod' is the production model's score on the candidate's holdout at training time. "
        "'signature': valid/INVALID as the replicas would decide (with FLYWHEEL_VERIFY_KMS_KEY_ID or "
        "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE set), else signed/unsigned; replicas never serve an INVALID one."
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """`flywheel models --history N`: the decisions recorded about one version (rollouts), oldest first."""
    from flywheel.registry.history import events

    reg = registry(args)
    reg.manifest(args.history)  # NotFound for a version that does not exist
    found = events(reg, args.history)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{reg.name} v{args.history}: " + ("history" if found else "no recorded events"))
    for e in found:
        print(f"  {e['when']} {e['what']} by {e['who']}: {e.get('reason', '')}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from flywheel.registry.registrations import register
    from flywheel.schema import load_schema
    from flywheel.storage import s3_client

    s = core(args)
    created = register(s3_client(), s.bucket, args.name, load_schema(args.schema), s.models_prefix)
    state = "registered" if created else "already registered with this schema"
    print(f"{args.name}: {state}; upload its batches under s3://{s.bucket}/{s.data_prefix}{args.name}/ "
          f"(flywheel drop FILE --model {args.name})")  # fmt: skip
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from flywheel.cli.mirror_note import report_mirror
    from flywheel.registry.operator_actions import promote

    reg = registry(args)
    alias = promote(reg, args.version, actor=actor(), force=args.force, reason=args.reason)
    print(f"production -> v{alias.version}")
    report_mirror(reg)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from flywheel.cli.mirror_note import report_mirror
    from flywheel.registry.operator_actions import rollback

    reg = registry(args)
    alias = rollback(reg, actor=actor())
    print(f"production -> v{alias.version} (was v{alias.doc['previous']})")
    report_mirror(reg)
    return 0


def add_parsers(add: Any, common: Any) -> None:
    """The registry commands, on the main parser's sub-command factory."""
    p = add("models", cmd_models, "List every model's versions, gate decisions and metrics, and which serves; "
                                  "`models add NAME --schema S` registers a model.")  # fmt: skip
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--history", type=int, metavar="VERSION",
                   help="list the decisions recorded about VERSION of --model (rollouts)")  # fmt: skip
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    a = sub.add_parser("add", help="register a model (create-only: a registered schema never changes)",
                       description="Register model NAME with a schema: built-in name or schema JSON file.")  # fmt: skip
    a.add_argument("name", help="model name: a-z, 0-9 and '-' (it becomes data/<name>/ and a metric label)")
    a.add_argument("--schema", required=True, help="built-in schema name (savings, churn) or path to a schema JSON")
    a.add_argument("--bucket", default=argparse.SUPPRESS, help="bucket (default: $FLYWHEEL_BUCKET)")

    p = add("promote", cmd_promote, "Point a model's production at version N (compare-and-swap on its alias).")
    common(p)
    p.add_argument("version", type=int, help="version number")
    p.add_argument("--force", action="store_true", help="allow a version the gate rejected")
    p.add_argument("--reason", default="", help="why (recorded in the alias)")

    p = add("rollback", cmd_rollback, "Move a model's production back to its previous approved version.")
    common(p)
