"""Where the CLI finds its bucket: the environment, or the local stack that `flywheel up` is running here.

`flywheel up` writes `<state dir>/stack.json` (endpoint, local credentials, bucket, default model) while it
runs, so `flywheel drop` in another terminal works without exporting anything. The file holds only the
embedded S3's fixed local credentials, never real ones, and is removed when the stack stops.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STACK_FILE = "stack.json"


def stack_file(state_dir: Path | None = None) -> Path:
    return (state_dir or Path(os.environ.get("FLYWHEEL_STATE_DIR", ".flywheel"))) / STACK_FILE


def write_stack_file(state_dir: Path, values: dict[str, str]) -> Path:
    path = stack_file(state_dir)
    path.write_text(json.dumps(values, indent=2))
    return path


def use_local_stack() -> Path | None:
    """With no bucket configured, take the running local stack's settings (environment values still win)."""
    if os.environ.get("FLYWHEEL_BUCKET"):
        return None
    path = stack_file()
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for k, v in values.items():
        os.environ.setdefault(str(k), str(v))
    return path


def settings_error(e: Any, local: Path | None) -> str:
    """One line for a pydantic ValidationError of the settings: which variable is missing or wrong."""
    missing: list[str] = []
    wrong: list[str] = []
    for err in e.errors():
        name = "FLYWHEEL_" + str(err["loc"][0]).upper() if err.get("loc") else "a setting"
        if err.get("type") == "missing":
            missing.append(name)
        else:
            wrong.append(f"{name} ({err.get('msg')})")
    parts = []
    if missing:
        parts.append("missing setting " + ", ".join(missing))
    if wrong:
        parts.append("invalid " + "; ".join(wrong))
    where = (
        f" (read {local})"
        if local
        else f"; no local stack at {stack_file()} either: export it, pass --bucket, or start one with `make up`"
    )
    return "; ".join(parts) + where
