"""uvicorn's httptools protocol with a bounded request head: the API's and the UI's HTTP listener.

uvicorn with httptools keeps every byte of an unfinished request head in memory and closes no connection that
never completes one: three sockets sending 96 MB of headers without a key took a replica from 393 to 668 MB, and a
socket sending nothing stayed open indefinitely. This protocol counts the bytes and headers of each request head
and times it: over `FLYWHEEL_MAX_HEADER_BYTES` or `FLYWHEEL_MAX_HEADERS` the client gets 431, a head not complete
within `FLYWHEEL_HEADER_TIMEOUT_SECONDS` of the connection (or of the request) starting gets 408, and the
connection is closed; nothing of such a request reaches the application. Why this and not h11 or a proxy in the
pod: docs/serving.md, "Request heads" (bench/header_flood.py measures it).

`flywheel serve` passes it to uvicorn (`http="app.http_limits:BoundedHttpToolsProtocol"`); the UI's Streamlit
server gets it through app/ui/streamlit_main.py.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from flywheel.settings import HttpLimits

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
#: requests one connection may have waiting behind the one being answered (HTTP/1.1 pipelining); more and the
#: connection is closed: each waiting request holds its parsed head, so without a bound one read of tiny requests
#: queues thousands of them
MAX_PIPELINED = 8


@cache
def limits() -> HttpLimits:
    """Read once per process (every connection asks)."""
    return HttpLimits()


class HeadTooLarge(Exception):
    """Raised from the parser's header callback to stop parsing a head that already got its 431."""


class CoalescingTransport:
    """The writes of one step of the event loop in one system call: uvicorn writes a response's head and body
    apart, two sends per response, a fifth of a request worker's time at c=64 (py-spy)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bounds = limits()
        self.max_head_bytes, self.max_headers = bounds.max_header_bytes, bounds.max_headers
        self.head_timeout = bounds.header_timeout_seconds
        self.head_bytes = self.header_count = 0
        self.reading_head = True
        self.head_began = self.answered = False  # in the read being parsed: a request began; one was answered
        self.body_bytes = 0  # body bytes in the read being parsed
        self.refused = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_deadline: float | None = None  # when the head being read must be complete (loop time)
        self.idle_deadline: float | None = None  # when an idle keep-alive connection is closed (uvicorn's timeout)

    # -- the head's clock: from the connection, or from the request, to its last header ----------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline = self.idle_deadline = None
        if self.head_timer is not None:  # a closed connection's protocol is not kept for its timer
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    # The clock is re-armed at every request on a keep-alive connection: one timer per connection stays armed and
    # moves on to the current deadline when it fires early, instead of a timer made and cancelled per request. It
    # keeps two deadlines: the head's (408) and, while the connection is idle between requests, uvicorn's keep-alive
    # timeout (closed without a word, as uvicorn does).
    def _arm(self) -> None:
        self.head_deadline = self.loop.time() + self.head_timeout
        self._schedule()

    def _disarm(self) -> None:
        self.head_deadline = None

    def _schedule(self) -> None:
        """The timer no later than the earliest deadline (it only moves when a deadline comes before it)."""
        idle, head = self.idle_deadline, self.head_deadline
        due = head if idle is None else idle if head is None else min(idle, head)
        timer = self.head_timer
        if due is None or (timer is not None and timer.when() <= due):
            return
        if timer is not None:
            timer.cancel()
        self.head_timer = self.loop.call_at(due, self._head_clock)

    def _head_clock(self) -> None:
        self.head_timer = None
        now = self.loop.time()
        if self.idle_deadline is not None and now >= self.idle_deadline:
            self.idle_deadline = self.head_deadline = None
            self.timeout_keep_alive_handler()
            return
        if self.head_deadline is not None and now >= self.head_deadline:
            self.head_deadline = None
            if self.reading_head and not self.refused:
                self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} s")
            return
        self._schedule()

    def _unset_keepalive_if_required(self) -> None:  # uvicorn's name: any data, or a request beginning, ends idling
        self.idle_deadline = None
        super()._unset_keepalive_if_required()

    # -- the head's size ---------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.head_began = self.answered = False
        self.body_bytes = 0
        super().data_received(data)  # one read at a time (at most 256 KiB): what is parsed is bounded by it
        # a read that leaves a head unfinished counts towards that head's size: the read, less the bodies it held
        # (at worst heads of requests it completed are counted too); nothing when the read ended with every request
        # in it answered (app/predict_protocol.py answers during the parse)
        if self.reading_head and not self.refused and (self.head_began or not self.answered):
            self.head_bytes += len(data) - self.body_bytes
            if self.head_bytes > self.max_head_bytes:
                self._refuse(431, f"request head over {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._refuse(0, "")
            raise HeadTooLarge
        self._message_begin()
        self.reading_head, self.head_bytes, self.header_count = True, 0, 0
        self.head_began = True
        self._arm()

    def _message_begin(self) -> None:
        super().on_message_begin()  # uvicorn's: the request's url, headers and ASGI scope start afresh

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        # uvicorn's own (0.54), but for the keep-alive timeout: a deadline on this connection's timer (above), where
        # uvicorn makes a timer per response and cancels it at the next request (0.7 us of ~60 per request)
        self.server_state.total_requests += 1
        self.head_began, self.answered = False, True  # (when answered within a read: the request that read began)
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request, its head already read
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        # idle until the next request: closed after the keep-alive timeout, unless a stray byte (a bare CRLF starts
        # no request) ended idling; the head's clock is the backstop
        self.reading_head, self.head_bytes = True, 0
        self.idle_deadline = self.loop.time() + self.timeout_keep_alive
        self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.max_headers:
            self._refuse(431, f"over {self.max_headers} request headers")
            raise HeadTooLarge  # stops the parser; uvicorn's own 400 is suppressed below
        # uvicorn's own on_header (0.54), here rather than a call more per header
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.refused:  # a head refused above has had its answer
            super().send_400_response(msg)

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close; just close when an earlier request's answer is still on its way (the client
        would take the refusal for that answer) or when there is nothing to say (status 0)."""
        self.refused = True
        self._disarm()
        if status == 0 or (self.cycle is not None and not self.cycle.response_complete):
            self.transport.close()
            return
        body = orjson.dumps({"error": message})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, REASONS[status], len(body))
            + body
        )
        self.transport.close()
