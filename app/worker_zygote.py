"""The fork server that starts `flywheel serve`'s request workers (docs/serving.md, "Starting a worker").

The agent forks it once, at start-up, after importing what a worker needs and before it starts a thread or makes
an S3 client. A new worker is then a fork of this single-threaded process, ready in milliseconds with the imports
shared, instead of a new interpreter that spends seconds of CPU importing scikit-learn beside the workers that
serve. The zygote (its loop: app/zygote_loop.py) waits for the agent's requests (over a socket pair: the listening
socket and the worker's link come with each), forks, hands back the worker's pid and a pidfd, and reports each exit
status. It dies with the agent, and each worker with it (PR_SET_PDEATHSIG: SIGTERM, as the agent would stop it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable

from app.zygote_loop import (
    close_all_but,
    forget_aws_environment,
    readable,
    receive_fds,
    serve_forks,
    signal_on_parent_death,
)

#: the exit status of a worker whose zygote died before reporting it
UNKNOWN_EXIT = 255
#: how long the agent waits for the zygote to hand back a forked worker (a fork takes milliseconds)
ANSWER_SECONDS = 10.0


class ZygoteLost(RuntimeError):
    """The zygote exited: no worker can be started again (the replica stops, and Kubernetes restarts it)."""


class Worker:
    """One forked request worker, as the agent sees it: `subprocess.Popen`'s calls the pool uses. It is the
    zygote's child, so its exit status comes from the zygote; signals go through a pidfd, never to a reused pid."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int) -> None:
        self.zygote, self.pid, self._pidfd = zygote, pid, pidfd
        self.returncode: int | None = None
        # the agent's link threads and its main loop poll and signal the same worker: the pidfd is closed once,
        # and never signalled after (its number could be another worker's pidfd by then)
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            return self._poll()

    def _poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid)
            if self.returncode is None and self.zygote.lost and readable(self._pidfd, 0):
                self.returncode = UNKNOWN_EXIT  # it exited (its pidfd says), and no zygote will say how
            if self.returncode is not None:
                os.close(self._pidfd)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self._poll() is None:
                with contextlib.suppress(ProcessLookupError):  # exited; its status is on its way
                    signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"request worker {self.pid}", timeout)
            time.sleep(0.02)
        return code


class Zygote:
    """The agent's end: `start()` forks the zygote (call it while this process has one thread), `fork_worker()` a
    worker, `close()` at the end (the zygote exits when its last worker has)."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self._sock = pid, sock
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self.lost = False

    @classmethod
    def start(cls, worker: Callable[[int, int, str], int]) -> Zygote:
        """Fork the zygote; `worker(listen_fd, link_fd, log_level)` is what each forked worker runs."""
        # Python's threads only: a fork copies no thread but the caller, and a lock another one held stays held in
        # the child. (OpenBLAS's own threads, with FLYWHEEL_PREDICT_THREADS > 1, are reset by its fork handler.)
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if threads:
            raise RuntimeError(f"the worker zygote must be forked before any thread starts; running: {threads}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        agent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                ours.close()
                signal_on_parent_death(agent, signal.SIGKILL)  # it holds nothing; its death sends its workers SIGTERM
                close_all_but(0, 1, 2, theirs.fileno())  # nothing else of the agent's reaches a worker
                forget_aws_environment()  # once, here: every worker is forked from this state
                code = serve_forks(theirs, worker)
            except BaseException:  # a child of a fork never returns into the agent's code
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def fork_worker(self, listen_fd: int, link_fd: int, metrics_dir: str, log_level: str) -> Worker:
        request = json.dumps({"metrics_dir": metrics_dir, "log_level": log_level}).encode()
        with self._lock:
            try:
                socket.send_fds(self._sock, [request], [listen_fd, link_fd])
                while True:
                    message, fds = self._receive(block=True)
                    if "pid" in message:
                        self._exits.pop(message["pid"], None)  # an earlier worker's of that pid, never read
                        return Worker(self, message["pid"], fds[0])
            except (OSError, ZygoteLost) as e:
                self.lost = True
                raise ZygoteLost(f"the worker zygote (pid {self.pid}) is gone: {e}") from e

    def exit_code(self, pid: int) -> int | None:
        """`pid`'s exit status (as `Popen.returncode`: -N for signal N) once the zygote has reaped it; read once
        (its `Worker` keeps it), so that a later worker given the same pid starts with none."""
        with self._lock:
            self._drain()
            return self._exits.pop(pid, None)

    def check(self) -> None:
        """Raise `ZygoteLost` if the zygote has exited."""
        with self._lock:
            self._drain()
        if self.lost:
            raise ZygoteLost(f"the worker zygote (pid {self.pid}) exited: no request worker can be started")

    def _drain(self) -> None:
        if not self.lost:
            try:
                while self._receive(block=False)[0]:
                    pass
            except (OSError, ZygoteLost):
                self.lost = True

    def _receive(self, block: bool) -> tuple[dict[str, int], list[int]]:
        """One message ({} when none is waiting), exits recorded on the way."""
        if block and not readable(self._sock.fileno(), ANSWER_SECONDS):
            raise ZygoteLost(f"no answer in {ANSWER_SECONDS:g} s")
        try:
            data, fds = receive_fds(self._sock, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return {}, []
        if not data:
            raise ZygoteLost("closed its end")
        message = json.loads(data)
        if "exit" in message:
            self._exits[message["exit"]] = message["code"]
        return message, fds

    def close(self, timeout: float = 10) -> None:
        """The zygote exits once its workers have (stop them first); it is killed after `timeout`."""
        self._sock.close()
        deadline = time.monotonic() + timeout
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.02)
