"""The one line every CLI command that moves an alias prints about the MLflow mirror (docs/mlflow.md)."""

from __future__ import annotations

import sys
from typing import Any


def report_mirror(registry: Any) -> None:
    """After an alias moved: follow it in MLflow (when mirrored) and say so in one line on stderr (stdout may be
    JSON); never fails the command."""
    from flywheel.tracking.mirror import after_alias_move

    done = after_alias_move(registry)
    if done is None:
        return
    if done.ok:
        print("mlflow: " + ("; ".join(done.notes) or "aliases already up to date"), file=sys.stderr)
    else:
        print(f"mlflow: mirror not updated ({done.error}); `flywheel mlflow sync --model {registry.name}` repairs it",
              file=sys.stderr)  # fmt: skip
