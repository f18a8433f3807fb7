"""A request worker: started by `flywheel serve` (app/serve.py, app/workers.py), never by hand.

It serves the API on the listening socket its agent opened, from what the agent sends over the link it
inherited (flywheel/serving/relayed.py), and does nothing else: no S3, no polls, no metrics port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from flywheel.serving.relay import LINK_FD, LISTEN_FD


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    listen_fd, link_fd = int(os.environ.pop(LISTEN_FD)), int(os.environ.pop(LINK_FD))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from app.api import create_app
    from app.serve import UVICORN_OPTIONS
    from flywheel.serving.fleet import pod_name
    from flywheel.serving.relayed import WorkerLink
    from flywheel.serving.worker_metrics import defer_worker_values
    from flywheel.settings import ServeSettings

    write_metrics = defer_worker_values()  # before the first metric is created
    settings = ServeSettings()  # type: ignore[call-arg]
    link = WorkerLink(socket.socket(fileno=link_fd), pod_name(), settings.rollout_publish_seconds)
    app = create_app(settings, link=link)
    config = uvicorn.Config(app, log_level=args.log_level, **UVICORN_OPTIONS)
    server = uvicorn.Server(config)

    async def serve() -> None:
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
        runner.run(serve())
    write_metrics()  # the last changes reach the files the agent reads
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
