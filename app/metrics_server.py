"""`/metrics` on a port of its own (FLYWHEEL_METRICS_PORT): Prometheus scrapes it inside the cluster; the public
Service exposes only the API port. A small threaded HTTP server, so a scrape never waits behind predictions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from flywheel.settings import HttpLimits

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class MetricsServer:
    """Serves `generate_latest(registry)` at GET /metrics, after `before_scrape()` (drift gauges refresh)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, before_scrape: Callable[[], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            # a connection that does not complete its request in time is closed (FLYWHEEL_HEADER_TIMEOUT_SECONDS);
            # the request head is bounded by http.server itself: 64 KiB a line, 100 headers (431 beyond)
            timeout = HttpLimits().header_timeout_seconds

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                before_scrape()
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the log

        self.httpd = _Server((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.httpd.server_address[:2])

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever: forever, if it never started
            self.httpd.shutdown()
        self.httpd.server_close()
