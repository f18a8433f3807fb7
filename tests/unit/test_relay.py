"""The agent link's frames and the guard on what a worker may send (flywheel/serving/relay.py)."""

from __future__ import annotations

import os
import pickle
import socket
import threading

import numpy as np
import pytest

from flywheel.serving import relay


def test_a_report_of_plain_data_and_arrays_reads_back() -> None:
    payload = ("savings", 3, "production", 1.5, None, ["a"], {"x": [1.0, float("nan")], "r": ["n", None]},
               np.arange(3.0), [{"yes": 0.25}])  # fmt: skip
    data = relay.frame(relay.ANSWERED, payload)
    kind, size = relay.HEADER.unpack(data[: relay.HEADER.size])
    assert (kind, size) == (relay.ANSWERED, len(data) - relay.HEADER.size)
    back = relay.safe_loads(data[relay.HEADER.size :])
    assert back[:6] == payload[:6] and back[6]["r"] == ["n", None] and np.isnan(back[6]["x"][1])
    assert np.array_equal(back[7], payload[7])


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_worker_cannot_make_the_agent_run_code() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"may not hold posix\.system"):
        relay.safe_loads(pickle.dumps(_Evil()))


def test_frames_cross_a_socket_whole_and_a_closed_end_reads_none() -> None:
    a, b = socket.socketpair()
    ours, theirs = relay.BlockingLink(a), relay.BlockingLink(b)
    big = b"x" * 3_000_000  # larger than a socket buffer: sent and read whole
    sender = threading.Thread(target=ours.send, args=(relay.VERSION, big))
    sender.start()
    got = theirs.receive()
    sender.join(10)
    assert got is not None and got[0] == relay.VERSION and relay.safe_loads(got[1]) == big
    ours.close()
    assert theirs.receive() is None
    theirs.close()
