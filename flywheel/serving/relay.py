"""The link between a replica's agent and its request workers (docs/serving.md, "One process serves, one works").

A pair of connected Unix sockets per worker carries frames: one byte of kind, four of length, then a pickle. The
agent sends what workers serve (registrations, verified versions, rollouts, API keys, model states); a worker
sends back each answered request (for captures and drift) and its rollout statistics. Pickles from a worker are
read with `SafeUnpickler`: plain data and numpy arrays only (a worker faces the network; the agent holds more).
"""

from __future__ import annotations

import contextlib
import io
import pickle
import socket
import struct
import threading
from typing import Any

#: the variables a request worker finds its inherited file descriptors in (app/workers.py starts it)
LISTEN_FD, LINK_FD = "FLYWHEEL_LISTEN_FD", "FLYWHEEL_AGENT_LINK_FD"
HEADER = struct.Struct("!BI")
MAX_FRAME = 64 << 20  # a worker's report: a request body is at most 8 MiB by default

# agent -> worker
MODELS, STATE, VERSION, ROLLOUT, KEYS, SYNCED = 1, 2, 3, 4, 5, 6
# worker -> agent
HELLO, ANSWERED, LIVE, LOADED = 11, 12, 13, 14


def frame(kind: int, payload: Any) -> bytes:
    body = pickle.dumps(payload, protocol=5)
    return HEADER.pack(kind, len(body)) + body


class SafeUnpickler(pickle.Unpickler):
    """Builtin containers and scalars, and numpy arrays: what a worker's reports hold, nothing that runs code."""

    ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"), ("builtins", "set"), ("builtins", "frozenset"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a worker report may not hold {module}.{name}")
        return super().find_class(module, name)


def safe_loads(data: bytes) -> Any:
    """A worker's report, read by the agent."""
    return SafeUnpickler(io.BytesIO(data)).load()


def agent_loads(data: bytes) -> Any:
    """What the agent sent, read by its worker: the versions the agent verified (signature, sha256, golden rows)
    after reading them through flywheel.registry.model_loading, and their rollouts. The socket was made by the
    agent and handed to this worker at its start; nothing else can write to it."""
    return pickle.loads(data)  # noqa: S301


class BlockingLink:
    """The agent's end of one worker's socket: `send` from any thread, `receive` on one reader thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(True)
        self._send_lock = threading.Lock()
        self._file = sock.makefile("rb")

    def send(self, kind: int, payload: Any) -> None:
        self.sendall(frame(kind, payload))

    def sendall(self, data: bytes) -> None:
        """One whole frame (`frame()`), never interleaved with another thread's."""
        with self._send_lock:
            self.sock.sendall(data)

    def receive(self) -> tuple[int, bytes] | None:
        """The next frame's kind and raw payload; None when the worker closed its end."""
        head = self._file.read(HEADER.size)
        if len(head) < HEADER.size:
            return None
        kind, size = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes from a worker")
        body = self._file.read(size)
        return None if len(body) < size else (kind, body)

    def close(self) -> None:
        for closing in (self._file.close, self.sock.close):
            with contextlib.suppress(OSError):
                closing()
