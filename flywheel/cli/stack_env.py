"""Where the CLI finds its bucket: the environment, or a local stack that `flywheel up` is running.

`flywheel up` writes `<state dir>/stack.json` (endpoint, local credentials, bucket, default model, its pid)
while it runs, and a one-line record of where that state dir is in this user's list of running stacks
(`$XDG_STATE_HOME/flywheel/stacks/`, by default `~/.local/state/flywheel/stacks/`). So `flywheel drop` in
another terminal, from any directory, works without exporting anything. Which stack, in order:
`FLYWHEEL_STATE_DIR` when set; else `./.flywheel` when a stack runs there; else the only running stack of
this user (with several, the CLI names them and asks for `FLYWHEEL_STATE_DIR`). The files hold only the
embedded S3's fixed local credentials, never real ones, and are removed by the `up` that wrote them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@dataclass(frozen=True)
class Running:
    """A stack that `flywheel up` (process `pid`) runs from `state_dir`."""

    state_dir: Path
    pid: int | None
    values: dict[str, str]

    def describe(self) -> str:
        api = self.values.get("FLYWHEEL_API_URL", "?")
        return f"{self.state_dir} (pid {self.pid}, API {api})"


def read_stack(state_dir: Path) -> Running | None:
    """The stack running from `state_dir`, None when none is (no file, or its `up` is gone)."""
    try:
        doc = json.loads(stack_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    pid = doc.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return None  # left by an `up` that was killed
    values = {str(k): str(v) for k, v in doc.items() if str(k).startswith(("AWS_", "FLYWHEEL_"))}
    return Running(state_dir.resolve(), pid if isinstance(pid, int) else None, values)


def write_stack_file(state_dir: Path, values: dict[str, str]) -> Path:
    """Announce this process's stack: `<state_dir>/stack.json` and this user's record of it."""
    path = stack_file(state_dir)
    path.write_text(json.dumps({**values, "pid": os.getpid()}, indent=2))
    record = _record_path(state_dir)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"state_dir": str(state_dir.resolve()), "pid": os.getpid()}))
    except OSError:  # a read-only home: the CLI still finds the stack from its folder or FLYWHEEL_STATE_DIR
        pass
    return path


def remove_stack_file(state_dir: Path) -> None:
    """Withdraw the announcement, only if this process wrote it (a second `up` never removes the first's)."""
    for path in (stack_file(state_dir), _record_path(state_dir)):
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            continue


def running_stacks() -> list[Running]:
    """Every stack of this user that is running now (records of stopped or killed ones are skipped)."""
    found: dict[Path, Running] = {}
    for record in sorted(running_dir().glob("*.json")) if running_dir().is_dir() else []:
        try:
            state_dir = Path(json.loads(record.read_text())["state_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        stack = read_stack(state_dir)
        if stack is not None and stack.pid is not None:
            found[stack.state_dir] = stack
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
