"""The processes `flywheel up` starts: each in its own session, logging to a file, and never outliving `up`.

Each child leads its own session, so a Ctrl-C in the terminal reaches only `up`, which stops them in order (the
embedded S3 last, after the state is saved). On Linux each child also asks the kernel for SIGTERM when `up`
dies, however it dies (even SIGKILL): nothing is left holding the ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from flywheel.child_processes import die_with_parent

log = logging.getLogger("flywheel.up")


def launched_at() -> float:
    """When this process started (wall clock): "ready in" counts from the user's command, not from our imports."""
    try:
        return Path(f"/proc/{os.getpid()}").stat().st_ctime
    except OSError:
        return time.time()


class Children:
    def __init__(self, cwd: Path, logs: Path, env: dict[str, str]) -> None:
        self.cwd, self.logs, self.env = cwd, logs, env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._preexec = die_with_parent()

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                args, cwd=self.cwd, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=self._preexec,  # only prctl: no locks taken
            )  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def exited(self) -> list[tuple[str, int]]:
        return [(name, proc.returncode) for name, proc in self.procs if proc.poll() is not None]

    def stop(self, names: Callable[[str], bool], grace: float = 25) -> None:
        """SIGTERM the children whose name matches (newest first), one grace period for all, then SIGKILL each
        one's process group (whatever it started too: streamlit under `ui`)."""
        procs = [(n, p) for n, p in reversed(self.procs) if names(n)]
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing its process group", name, grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
