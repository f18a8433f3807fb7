"""`flywheel serve`'s request workers: N processes on the listening socket this process opened, each linked to
the agent (flywheel/serving/agent.py) by a socket pair; one that dies is started again, with backoff.

Workers are forked by the zygote (app/worker_zygote.py), never by the agent itself: the agent runs threads, and a
fork copies them mid-lock. Each dies with the zygote, which dies with this process (PR_SET_PDEATHSIG), and writes
its metrics to the multiprocess directory the agent's /metrics reads.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

from prometheus_client.multiprocess import mark_process_dead

from app.worker_zygote import Worker, Zygote, ZygoteLost
from flywheel.serving import relay
from flywheel.serving.agent import Agent

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class _Slot:
    process: Worker | None = None
    started: float = 0.0
    failures: int = 0
    next_start: float = 0.0


class WorkerPool:
    def __init__(
        self, zygote: Zygote, agent: Agent, listener: socket.socket, count: int, metrics_dir: str, log_level: str
    ) -> None:
        self.zygote, self.agent, self.listener = zygote, agent, listener
        self.metrics_dir, self.log_level = metrics_dir, log_level
        self.slots = [_Slot() for _ in range(count)]
        self._lock = threading.Lock()
        agent.on_lost = self._lost

    def _start(self, wid: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = self.zygote.fork_worker(self.listener.fileno(), theirs.fileno(), self.metrics_dir, self.log_level)
        except ZygoteLost:
            ours.close()
            raise
        finally:
            theirs.close()
        slot = self.slots[wid]
        slot.process, slot.started = process, time.monotonic()
        self.agent.attach(process.pid, relay.BlockingLink(ours))  # by pid: a restarted worker is another
        log.info("request worker %d started (pid %d)", wid, process.pid)

    def start(self) -> None:
        for wid in range(len(self.slots)):
            self._start(wid)

    def _lost(self, pid: int) -> None:
        """The agent lost its link to a worker: a worker it cannot reach must not serve stale models."""
        for slot in self.slots:
            process = slot.process
            if process is not None and process.pid == pid and process.poll() is None:
                process.terminate()

    def tend(self) -> None:
        """Start again each worker that exited (backoff while they keep dying young). Raises `ZygoteLost` when no
        worker can be started any more."""
        self.zygote.check()
        now = time.monotonic()
        for wid, slot in enumerate(self.slots):
            process = slot.process
            if process is not None and process.poll() is not None:
                mark_process_dead(process.pid, self.metrics_dir)
                young = now - slot.started < 60
                slot.failures = slot.failures + 1 if young else 0
                slot.next_start = now + min(MAX_BACKOFF_SECONDS, 0.5 * 2**slot.failures) if young else now
                log.error("request worker %d (pid %d) exited with %s; starting another%s", wid, process.pid,
                          process.returncode, f" in {slot.next_start - now:.1f} s" if young else "")  # fmt: skip
                slot.process = None
            if slot.process is None and now >= slot.next_start:
                self._start(wid)

    def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each finishes its requests in flight), then wait, then kill what is left."""
        running = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
