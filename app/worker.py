"""A request worker: forked by `flywheel serve`'s zygote (app/serve.py, app/worker_zygote.py), never run by hand.

It serves the API on the listening socket its agent opened, from what the agent sends over the link it
inherited (flywheel/serving/relayed.py), and does nothing else: no S3, no polls, no metrics port.
"""

from __future__ import annotations

import asyncio
import signal
import socket

import uvicorn

from app.api import create_app
from app.server_tuning import UVICORN_OPTIONS
from flywheel.serving.fleet import pod_name
from flywheel.serving.relayed import WorkerLink
from flywheel.serving.worker_metrics import defer_worker_values
from flywheel.settings import ServeSettings

#: what a worker imports beyond this module, imported by the agent before it forks the zygote so that every worker
#: starts with them loaded: scikit-learn's estimators (for the models it unpickles) and uvicorn's parts
PRELOAD = ("flywheel.training.pipelines", "uvicorn.loops.uvloop", "uvicorn.lifespan.on", "app.predict_protocol")


def serve(listen_fd: int, link_fd: int, log_level: str) -> int:
    """Serve the API on `listen_fd` from what the agent sends over `link_fd`, until SIGTERM or the agent is gone."""
    write_metrics = defer_worker_values()  # before the first metric is created
    settings = ServeSettings()  # type: ignore[call-arg]
    link = WorkerLink(socket.socket(fileno=link_fd), pod_name(), settings.rollout_publish_seconds)
    app = create_app(settings, link=link)
    config = uvicorn.Config(app, log_level=log_level, **UVICORN_OPTIONS)
    server = uvicorn.Server(config)

    async def run() -> None:
        async def agent_gone() -> None:
            await link.closed.wait()
            server.should_exit = True  # no agent: nothing would reload, capture or publish; drain and exit

        watch = asyncio.get_running_loop().create_task(agent_gone())
        try:
            await server.serve(sockets=[socket.socket(fileno=listen_fd)])
        finally:
            watch.cancel()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when workers stop (SIGTERM)
    # uvicorn handles SIGTERM while it serves, then restores this handler and raises the signal again: with the
    # default handler the process would die there, before its last metric changes are written below
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop, as uvicorn.run would
        runner.run(run())
    write_metrics()  # the last changes reach the files the agent reads
    return 0
