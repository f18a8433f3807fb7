"""The worker zygote (app/worker_zygote.py) on its own: run in a fresh interpreter (a pytest process has threads,
and the zygote refuses to be forked beside one), with a worker function that reports what it sees over its link."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, socket, threading, time
    from app.worker_zygote import Zygote

    def _is_open(fd):
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    def worker(listen_fd, link_fd, log_level):
        link = socket.socket(fileno=link_fd)
        listener = socket.socket(fileno=listen_fd)
        seen = [str(os.getppid()), log_level, open("/proc/self/comm").read().strip(),
                str(any(n.startswith("AWS_") for n in os.environ)), os.environ["PROMETHEUS_MULTIPROC_DIR"],
                str(listener.getsockname()[1]), str(_is_open(stray))]
        link.sendall(" ".join(seen).encode())
        order = link.recv(16)
        if order == b"raise":
            raise ValueError("a worker that fails")
        if order == b"exit":
            raise SystemExit(4)
        if order == b"return":
            return 3
        time.sleep(60)
        return 0

    def start(zygote, order):
        ours, theirs = socket.socketpair()
        worker_ = zygote.fork_worker(listener.fileno(), theirs.fileno(), "/metrics-dir", "debug")
        theirs.close()
        seen = ours.recv(200).decode().split()
        assert seen == [str(zygote.pid), "debug", "flywheel-worker", "False", "/metrics-dir", str(port), "False"], seen
        if order:
            ours.sendall(order)
        return worker_, ours

    os.environ["AWS_SECRET_ACCESS_KEY"] = "agent-only"
    listener = socket.create_server(("127.0.0.1", 0))
    stray = os.open("/dev/null", os.O_RDONLY)  # open in the agent when it forks: no worker holds it
    port = listener.getsockname()[1]
    zygote = Zygote.start(worker)
    deadline = time.monotonic() + 10  # it names itself once forked
    while open(f"/proc/{zygote.pid}/comm").read().strip() != "flywheel-zygote":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    codes = {}
    for order in (b"return", b"exit", b"raise"):
        worker_, link = start(zygote, order)
        codes[order.decode()] = worker_.wait(10)
    worker_, link = start(zygote, None)
    assert worker_.poll() is None
    worker_.terminate()
    codes["terminated"] = worker_.wait(10)
    worker_, link = start(zygote, None)
    worker_.kill()
    codes["killed"] = worker_.wait(10)
    worker_.kill()  # already gone: nothing is signalled
    print(sorted(codes.items()))
    worker_, link = start(zygote, None)
    threading.Thread(target=lambda: (time.sleep(0.5), worker_.terminate())).start()
    began = time.monotonic()
    zygote.close(timeout=10)  # the zygote exits once its last worker has, not before
    assert time.monotonic() - began >= 0.5 and not os.path.exists(f"/proc/{worker_.pid}")
    assert not os.path.exists(f"/proc/{zygote.pid}")  # and it was reaped
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    try:
        Zygote.start(worker)
    except RuntimeError as e:
        print("refused:", e)
    """
)


def test_workers_are_forked_report_their_exit_and_the_zygote_outlives_the_last() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(sorted({"return": 3, "exit": 4, "raise": 1, "terminated": -15, "killed": -9}.items())), (
        done.stdout
    )
    assert "ValueError: a worker that fails" in done.stderr  # a failing worker's traceback is kept
    # the agent has threads by then: forking a zygote now would copy them mid-lock
    assert lines[1].startswith("refused: the worker zygote must be forked before any thread starts")
