"""Where the CLI finds its bucket: the environment, or a local stack that `flywheel up` is running.

`flywheel up` writes `<state dir>/stack.json` (endpoint, local credentials, bucket, default model, its pid)
while it runs, and a one-line record of where that state dir is in this user's list of running stacks
(`$XDG_STATE_HOME/flywheel/stacks/`, by default `~/.local/state/flywheel/stacks/`). So `flywheel drop` in
another terminal, from any directory, works without exporting anything. Which stack, in order:
`FLYWHEEL_STATE_DIR` when set; else `./.flywheel` when a stack runs there; else the only running stack of
this user (with several, the CLI names them and asks for `FLYWHEEL_STATE_DIR`). The files hold only the
embedded S3's fixed local credentials, never real ones, and are removed by the `up` that wrote them.

A stack counts as running only while its `up` holds `<state dir>/up.lock` (a pid left in a file by a killed
`up` may since belong to anyone). The CLI takes a stack.json only from this user's own files (never through a
symlink, never one another user could write: flywheel/cli/own_files.py), and only what `up` writes in it:
loopback URLs, key files inside that state directory, a few plain names, and the MLflow the stack mirrors to (an
http(s) URL: loopback when `up` runs it, any when the user's MLFLOW_TRACKING_URI named another).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.cli.own_files import lock_held, private_dir, read_own, trusted_dir, write_own

STACK_FILE = "stack.json"
DEFAULT_STATE_DIR = ".flywheel"


def stack_file(state_dir: Path | None = None) -> Path:
    return (state_dir or Path(os.environ.get("FLYWHEEL_STATE_DIR", DEFAULT_STATE_DIR))) / STACK_FILE


def running_dir() -> Path:
    """This user's list of running local stacks (one small file per stack)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flywheel" / "stacks"


def _record_path(state_dir: Path) -> Path:
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return running_dir() / f"{digest}.json"


LOCK_FILE = "up.lock"
LOOPBACK_URL = re.compile(r"http://127\.0\.0\.1:\d{1,5}")
#: what `flywheel up` writes and the CLI takes, checked: loopback URLs, key files inside the state directory
URLS = ("AWS_ENDPOINT_URL", "FLYWHEEL_API_URL")
FILES = ("FLYWHEEL_SIGNING_KEY_FILE", "FLYWHEEL_API_KEYS_FILE", "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE")
HTTP_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s?#@]*)?")  # no credentials in it
WEB = ("MLFLOW_TRACKING_URI",)  # http(s) URLs, not only loopback
PLAIN = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "FLYWHEEL_BUCKET", "FLYWHEEL_MODEL_NAME",
         "FLYWHEEL_API_KEYS_REFRESH_SECONDS", "FLYWHEEL_MLFLOW_EXPERIMENT",
         "FLYWHEEL_MLFLOW_REGISTERED_PREFIX")  # fmt: skip


@dataclass(frozen=True)
class Running:
    """A stack that `flywheel up` (process `pid`) runs from `state_dir`."""

    state_dir: Path
    pid: int | None
    values: dict[str, str]

    def describe(self) -> str:
        api = self.values.get("FLYWHEEL_API_URL", "?")
        return f"{self.state_dir} (pid {self.pid}, API {api})"


def _checked(state_dir: Path, doc: dict[str, Any]) -> dict[str, str]:
    """The settings of a stack.json, each checked; ValueError naming the first that is not what `up` writes."""
    values: dict[str, str] = {}
    for key, value in doc.items():
        if key in ("pid",):
            continue
        if key not in URLS + FILES + PLAIN + WEB or not isinstance(value, str):
            raise ValueError(f"unexpected entry {key!r}")
        if key in URLS and not LOOPBACK_URL.fullmatch(value):
            raise ValueError(f"{key} {value!r} is not a loopback URL")
        if key in WEB and not HTTP_URL.fullmatch(value):
            raise ValueError(f"{key} {value!r} is not an http(s) URL without credentials")
        if key in FILES and not Path(value).resolve().is_relative_to(state_dir):
            raise ValueError(f"{key} {value!r} is outside {state_dir}")
        values[key] = value
    return values


def read_stack(state_dir: Path) -> Running | None:
    """The stack running from `state_dir`: None when none is (no file, or its `up` no longer holds the lock). A
    stack.json this user did not write, or that holds more than `up` writes, is refused with a warning."""
    state_dir = state_dir.resolve()
    if not lock_held(state_dir / LOCK_FILE):
        return None  # stopped, or killed (a pid in a file left behind may since belong to anyone)
    try:
        doc = json.loads(read_own(stack_file(state_dir)))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        values = _checked(state_dir, doc)
    except FileNotFoundError:
        return None  # still starting
    except (OSError, ValueError) as e:
        print(f"warning: ignoring the local stack in {state_dir}: {e}", file=sys.stderr)
        return None
    pid = doc.get("pid")
    return Running(state_dir, pid if isinstance(pid, int) else None, values)


def write_stack_file(state_dir: Path, values: dict[str, str]) -> Path:
    """Announce this process's stack: `<state_dir>/stack.json` and this user's record of it."""
    path = stack_file(state_dir)
    write_own(path, json.dumps({**values, "pid": os.getpid()}, indent=2).encode())
    try:
        record = private_dir(running_dir()) / _record_path(state_dir).name
        write_own(record, json.dumps({"state_dir": str(state_dir.resolve()), "pid": os.getpid()}).encode())
    except OSError as e:  # the CLI still finds the stack from its folder or FLYWHEEL_STATE_DIR
        print(f"warning: no record of this stack in {running_dir()}: {e}", file=sys.stderr)
    return path


def remove_stack_file(state_dir: Path) -> None:
    """Withdraw the announcement, only if this process wrote it (a second `up` never removes the first's)."""
    for path in (stack_file(state_dir), _record_path(state_dir)):
        try:
            if json.loads(read_own(path)).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            continue


def running_stacks() -> list[Running]:
    """Every stack of this user that is running now; records of stopped or killed ones are deleted."""
    folder = running_dir()
    if not folder.is_dir() or trusted_dir(folder):
        return []
    found: dict[Path, Running] = {}
    for record in sorted(folder.glob("*.json")):
        try:
            state_dir = Path(json.loads(read_own(record))["state_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        stack = read_stack(state_dir)
        if stack is not None:
            found[stack.state_dir] = stack
        elif not lock_held(state_dir / LOCK_FILE):
            record.unlink(missing_ok=True)  # its `up` is gone
    return list(found.values())


def find_stack() -> Running | None:
    """The local stack the CLI should use (see the module's docstring); None when there is none."""
    named = os.environ.get("FLYWHEEL_STATE_DIR")
    if named:
        return read_stack(Path(named))
    here = read_stack(Path(DEFAULT_STATE_DIR))
    if here is not None:
        return here
    stacks = running_stacks()
    return stacks[0] if len(stacks) == 1 else None  # with several, settings_error names them


def use_local_stack() -> Path | None:
    """With no bucket configured, take the running local stack's settings (environment values still win)."""
    if os.environ.get("FLYWHEEL_BUCKET"):
        return None
    stack = find_stack()
    if stack is None:
        return None
    for k, v in stack.values.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("FLYWHEEL_STATE_DIR", str(stack.state_dir))  # `identity token` finds its keys too
    return stack_file(stack.state_dir)


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
    return "; ".join(parts) + (f" (read {local})" if local else "; " + no_stack_hint())


def no_stack_hint() -> str:
    """Why no local stack was used, and what to do."""
    stacks = [] if os.environ.get("FLYWHEEL_STATE_DIR") else running_stacks()
    if len(stacks) > 1:
        names = "; ".join(s.describe() for s in stacks)
        return f"{len(stacks)} local stacks are running: {names}; choose one with FLYWHEEL_STATE_DIR=DIR"
    where = os.environ.get("FLYWHEEL_STATE_DIR") or f"./{DEFAULT_STATE_DIR}, nor in {running_dir()}"
    return (
        f"no running local stack in {where}: start one with `make up`, point FLYWHEEL_STATE_DIR at its state "
        "directory, or set FLYWHEEL_BUCKET and AWS credentials for a deployed stack"
    )
