"""The worker zygote's side (app/worker_zygote.py is the agent's): its loop, which forks a request worker for each of
the agent's requests and reports each exit, and the forked worker's entry. Also the few system calls both sides use
(prctl, descriptors passed over a Unix socket, a bounded wait)."""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15  # <linux/prctl.h>
_MESSAGE = 4096
_FD = array.array("i")


def _prctl(option: int, value: int | bytes) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


def signal_on_parent_death(parent: int, sig: signal.Signals) -> None:
    """`sig` to this process when `parent` dies (flywheel/child_processes.py's `die_with_parent` is the same for
    `subprocess`: a preexec, one signal); exits now if it already has."""
    _prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died between the fork and prctl: no signal would come
        os._exit(1)


def serve_forks(sock: socket.socket, worker: Callable[[int, int, str], int]) -> int:
    """The zygote's loop: fork a worker per request, report each exit; return when the agent has closed its end
    and the last worker has exited."""
    me = os.getpid()
    _prctl(PR_SET_NAME, b"flywheel-zygote")
    for sig in (signal.SIGINT, signal.SIGTERM):  # the agent decides (it closes its end, or dies)
        signal.signal(sig, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up byte is written
    children: set[int] = set()
    open_ = True
    while open_ or children:
        ready, _, _ = select.select([sock.fileno(), wake_r] if open_ else [wake_r], [], [], 1.0)
        if wake_r in ready:
            while os.read(wake_r, 512) == 512:
                pass
        for pid, code in _reaped():
            children.discard(pid)
            if open_:
                _send(sock, {"exit": pid, "code": code})
        if sock.fileno() in ready:
            data, fds = receive_fds(sock, 0)
            if not data:
                open_ = False
                continue
            request = json.loads(data)
            pid = os.fork()
            if pid == 0:
                sock.close()
                os.close(wake_r)
                os.close(wake_w)
                _run_worker(me, fds, request, worker)  # never returns
            for fd in fds:
                os.close(fd)
            children.add(pid)
            pidfd = os.pidfd_open(pid)  # before it can be reaped: signals through it never reach a reused pid
            try:
                _send(sock, {"pid": pid}, [pidfd])
            finally:
                os.close(pidfd)
    return 0


def readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # not select.select: it fails on descriptors past 1024
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def forget_aws_environment() -> None:
    """No AWS credentials in the zygote's environment, so none in a worker's: a worker never calls AWS (its agent
    does, with a client made after this fork). The AWS_* variables leave os.environ, and their values are blanked
    where the agent's exec left them (what /proc/<pid>/environ shows). Freed copies of the strings may remain in
    the heap the fork copied (docs/serving.md, "Starting a worker")."""
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    i = 0
    while (address := environ[i]) is not None:
        entry = ctypes.string_at(address)
        if entry.startswith(b"AWS_") and b"=" in entry:
            start = entry.index(b"=") + 1
            ctypes.memset(address + start, ord("x"), len(entry) - start)
        i += 1
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]


def close_all_but(*keep: int) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # the descriptor of the listing itself, closed by now
                os.close(fd)


def receive_fds(sock: socket.socket, flags: int) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries (`socket.recv_fds` ignores its flags before Python 3.12)."""
    data, ancillary, _, _ = sock.recvmsg(_MESSAGE, socket.CMSG_SPACE(2 * _FD.itemsize), flags)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _reaped() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        done.append((pid, os.waitstatus_to_exitcode(status)))
    return done


def _send(sock: socket.socket, message: dict[str, int], fds: Sequence[int] = ()) -> None:
    with contextlib.suppress(OSError):  # the agent is gone: its death signal is on its way
        socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def _run_worker(zygote: int, fds: list[int], request: dict[str, str], worker: Callable[[int, int, str], int]) -> None:
    """The forked worker: its own signals, name and environment, then `worker`; exits with its code."""
    from flywheel.serving.worker_metrics import DIRECTORY_VARIABLE

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal_on_parent_death(zygote, signal.SIGTERM)
        _prctl(PR_SET_NAME, b"flywheel-worker")
        os.environ[DIRECTORY_VARIABLE] = request["metrics_dir"]
        code = worker(fds[0], fds[1], request["log_level"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # a fork's child never returns into the zygote's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
