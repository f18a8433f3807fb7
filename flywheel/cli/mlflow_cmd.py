"""`flywheel mlflow sync`: repair the MLflow mirror of a model (docs/mlflow.md)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from flywheel.errors import FlywheelError


def cmd_sync(args: argparse.Namespace) -> int:
    from flywheel.cli.models import registry
    from flywheel.registry.model_loading import open_version
    from flywheel.registry.signing import verifier
    from flywheel.tracking.mirror import sync
    from flywheel.tracking.mlflow_client import tracking_uri

    if tracking_uri() is None:
        raise FlywheelError("MLFLOW_TRACKING_URI is not set: nothing to mirror to (docs/mlflow.md)")
    reg = registry(args)
    check = verifier(os.environ.get("FLYWHEEL_VERIFY_KMS_KEY_ID"), os.environ.get("FLYWHEEL_VERIFY_PUBLIC_KEY_FILE"))

    def load(version: int) -> tuple[dict[str, Any], Any]:
        opened = open_version(reg, version, check)  # verified before anything is unpickled
        return opened.manifest, opened.load_model()

    done = sync(reg, load)
    assert done is not None
    for note in done.notes or ["already in step"]:
        print(f"{reg.name}: {note}")
    if not done.ok:
        print(f"error: {reg.name}: the mirror stopped: {done.error}", file=sys.stderr)
        return 1
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_parsers(add: Any, common: Any) -> None:
    p: argparse.ArgumentParser = add("mlflow", lambda args: _usage(p),
            "The MLflow mirror (MLFLOW_TRACKING_URI): `mlflow sync` repairs it.")  # fmt: skip
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    s = sub.add_parser("sync", help="mirror every version, run and alias of a model that MLflow is missing",
                       description="Log the missing retrain runs, register the missing versions and move the "
                       "MLflow aliases production and candidate to where Flywheel's are. Idempotent; one "
                       "direction only (MLflow never moves Flywheel's alias).")  # fmt: skip
    common(s)
    s.set_defaults(func=cmd_sync)
