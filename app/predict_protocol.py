"""The API's HTTP protocol: a prediction request that arrived whole in one read is answered straight from the parser.

uvicorn turns every request into an ASGI cycle: a scope, a task, receive and send messages, the response head
rebuilt and checked header by header. For a 1-row prediction that was ~15 of a request worker's ~90 us of CPU
(bench: a trivial handler at 28 us per request through ASGI, 13 us from the parser). So for a POST to a prediction
path (app/predict_lane.py `match`) whose head and body came in the same read, the usual case for the bodies clients
send, this protocol calls the lane's `handle` itself and writes the answer. Every other request, and a prediction
whose body is still on its way, goes through uvicorn's ASGI cycle as before (with the body read so far): its body
timeout, flow control, `Expect: 100-continue` and pipelining are uvicorn's. The request head's bounds
(app/http_limits.py) hold for both.

`handle` is a coroutine: it runs here until it first waits (a batch for the predict thread, a canary's batcher);
then a task goes on with it, registered with the server like uvicorn's own, so a shutdown waits for it too.
Requests behind it on the connection wait their turn (uvicorn's pipeline).
"""

from __future__ import annotations

import logging
import types
import urllib.parse
from collections.abc import Coroutine, Generator
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.http_limits import BoundedHttpToolsProtocol
from app.predict_lane import Answer, PredictLane, match

log = logging.getLogger(__name__)


class _NoEvent:
    def set(self) -> None:
        pass


class _Cycle:
    """A prediction answered here, as uvicorn's protocol sees it while it is being answered (`self.cycle`): later
    requests on the connection queue behind it; a shutdown lets it finish, then closes."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive, self.response_complete, self.disconnected = keep_alive, False, False
        self.message_event = _NoEvent()


class _Waiting:
    """A prediction whose head arrived: answered here if its body completes in the same read."""

    __slots__ = ("body", "found", "keep_alive", "method")

    def __init__(self, found: tuple[str, str | None, str | None], method: str, keep_alive: bool) -> None:
        self.found, self.method, self.keep_alive = found, method, keep_alive
        self.body = bytearray()


def _lane(app: Any) -> PredictLane | None:
    """The lane in the application uvicorn runs (under uvicorn's own middleware, if any)."""
    for _ in range(4):
        if isinstance(app, PredictLane):
            return app
        app = getattr(app, "app", None)
    return None


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Answer], waiting: Any) -> Generator[Any, None, Answer]:
    """Go on, in a task, with a coroutine started outside one that now waits on `waiting`."""
    while True:
        try:
            yield waiting
        except BaseException as e:  # the task was cancelled while waiting: the coroutine decides
            try:
                waiting = coro.throw(e)
            except StopIteration as stop:
                answer: Answer = stop.value
                return answer
            continue
        return (yield from coro)


class PredictHttpProtocol(BoundedHttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lane = _lane(self.app)
        self.waiting: _Waiting | None = None
        self.answered_here = False  # a request of the read being parsed is answered here

    def on_headers_complete(self) -> None:
        if (self.lane is None or self.answered_here or self.flow.write_paused or self.pipeline
                or self.parser.get_method() != b"POST" or self.parser.should_upgrade()):  # fmt: skip
            # at most one answer from the parser per read, none while the client is not reading its answers:
            # requests behind it take uvicorn's path, where the pipeline's bound and write backpressure hold
            self._to_uvicorn()
            return
        if self.cycle is not None and not self.cycle.response_complete:  # one ahead of it: uvicorn queues it
            self._to_uvicorn()
            return
        found = match(self._path())
        if found is None:
            self._to_uvicorn()
            return
        self.reading_head = False
        self._disarm()
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.waiting = _Waiting(found, "POST", keep_alive)
        self.answered_here = True

    def _message_begin(self) -> None:
        # uvicorn's on_message_begin but for the ASGI scope, which only a request taking uvicorn's path needs
        self.url, self.expect_100_continue, self.headers = b"", False, []
        self.scope = None  # type: ignore[assignment]

    def _to_uvicorn(self) -> None:
        """The head goes on as uvicorn takes it, with the scope its on_message_begin makes (the headers as read)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers
        super().on_headers_complete()

    def _path(self) -> str:
        """The request's path as uvicorn puts it in the ASGI scope."""
        path: str = httptools.parse_url(self.url).path.decode("ascii")
        return self.root_path + (urllib.parse.unquote(path) if "%" in path else path)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # a request answered here within this read armed the idle connection's timer; this one must not inherit it
        self._unset_keepalive_if_required()

    def on_body(self, body: bytes) -> None:
        if self.waiting is not None:
            self.body_bytes += len(body)
            self.waiting.body += body
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        waiting = self.waiting
        if waiting is None:
            super().on_message_complete()
            return
        self.waiting = None
        assert self.lane is not None
        cycle = self.cycle = _Cycle(waiting.keep_alive)  # type: ignore[assignment]
        coro = self.lane.handle(waiting.found, waiting.method, self.headers, bytes(waiting.body))
        try:
            pending = coro.send(None)
        except StopIteration as done:
            self._respond(cycle, done.value)
            return
        task = self.loop.create_task(self._go_on(cycle, coro, pending))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def data_received(self, data: bytes) -> None:
        self.answered_here = False
        super().data_received(data)
        if self.waiting is not None:  # the body goes on in a later read: the ASGI cycle reads the rest
            if self.refused or self.transport.is_closing():  # refused, or a parse error answered 400 and closed
                self.waiting = None
            else:
                self._hand_to_asgi()

    def _hand_to_asgi(self) -> None:
        waiting, self.waiting = self.waiting, None
        assert waiting is not None
        self._to_uvicorn()  # the head as uvicorn would have taken it: its cycle, its task
        if waiting.body:
            self.cycle.body += waiting.body
            if len(self.cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            self.cycle.message_event.set()

    async def _go_on(self, cycle: _Cycle, coro: Coroutine[Any, Any, Answer], pending: Any) -> None:
        try:
            answer = await _resume(coro, pending)
        except BaseException:  # cancelled (a shutdown past its grace period): no answer, the connection closes
            cycle.response_complete = True
            self.transport.close()
            raise
        self._respond(cycle, answer)

    def _respond(self, cycle: _Cycle, answer: Answer) -> None:
        cycle.response_complete = True
        if cycle.disconnected:
            return
        status, body, extra = answer
        head = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *extra):
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        if not cycle.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", body)
        self.transport.write(b"".join(head))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
