"""The HTTP endpoint of ``backbeat worker --metrics HOST:PORT``: health and metrics.

    GET /healthz   200 while the worker beats, 503 otherwise (JSON: what is wrong)
    GET /metrics   Prometheus's text format (`backbeat.prometheus`)

Served by the standard library's HTTP server from a thread of its own, not by
the worker's event loop: a task that blocks the loop must get a 503 from
``/healthz`` (the lease keeper measures how long the loop has been blocked),
not a probe that times out without saying why. ``/healthz`` needs nothing
beyond the standard library; ``/metrics`` needs prometheus-client (the
``prometheus`` extra), and answers 501 saying so when it is missing. The
attempt counters and durations live in the worker process, so only the
worker can serve them: the app's ``/metrics`` never sees them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from backbeat.runner import Runner

if TYPE_CHECKING:
    from backbeat.prometheus import TaskMetrics

logger = logging.getLogger("backbeat")

INSTALL_METRICS = 'metrics need prometheus-client: pip install "backbeat[prometheus]"'
# How long a scrape waits for the worker's loop to read the task gauge from the store;
# a blocked loop gets the gauge as last read (the counters are current either way).
_GAUGE_WAIT = 1.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` listens on every interface); ValueError says what is wrong."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 0.0.0.0:9100 or :9100)")
    return host or "0.0.0.0", int(port)


def worker_metrics(runner: Runner) -> TaskMetrics | None:
    """The runner's Prometheus metrics (its own, if the app made them); None without
    prometheus-client."""
    try:
        from backbeat.prometheus import TaskMetrics, instrument
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        return None
    for observer in runner.hooks.observers:
        if isinstance(observer, TaskMetrics):
            return observer
    return instrument(runner)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A probe that hangs up early, say: not worth a traceback on the worker's stderr.
        logger.debug("backbeat worker: endpoint request failed", exc_info=True)


class WorkerEndpoint:
    def __init__(self, runner: Runner, host: str, port: int, metrics: TaskMetrics | None) -> None:
        self.runner = runner
        self.metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = _Server((host, port), self._handler())  # OSError: the CLI says it
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve from a thread; `loop` is the worker's (the gauge is read on it)."""
        self._loop = loop
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="backbeat-worker-endpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def health(self) -> tuple[int, bytes]:
        health = self.runner.health()
        if health is None:
            document: dict[str, object] = {
                "healthy": False,
                "problems": ["the worker is not running (starting, or stopping)"],
            }
        else:
            document = health.document()
        status = 200 if document["healthy"] else 503
        return status, json.dumps(document).encode() + b"\n"

    def scrape(self) -> tuple[int, bytes, str]:
        if self.metrics is None:
            return 501, INSTALL_METRICS.encode() + b"\n", "text/plain; charset=utf-8"
        loop = self._loop
        if loop is not None and not loop.is_closed():
            refresh = asyncio.run_coroutine_threadsafe(self.metrics.refresh(), loop)
            try:
                refresh.result(timeout=_GAUGE_WAIT)
            except concurrent.futures.TimeoutError:
                refresh.cancel()
            except Exception as exc:  # the store is away: the counters still tell
                logger.warning("backbeat worker: cannot read the task gauge for /metrics: %s", exc)
        return 200, self.metrics.exposition(), self.metrics.content_type

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                if path == "/healthz":
                    status, body = endpoint.health()
                    self._answer(status, body, "application/json")
                elif path == "/metrics":
                    self._answer(*endpoint.scrape())
                else:
                    self._answer(404, b"not found: try /healthz or /metrics\n", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a probe every few seconds is not news; the worker's log stays its own

        return Handler
