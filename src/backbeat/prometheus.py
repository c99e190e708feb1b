"""Prometheus metrics: attempts by outcome, their durations, and the tasks waiting per queue.

    from backbeat.prometheus import instrument, metrics_route
    metrics = instrument(runner)                   # prometheus_client's default registry
    app = App(routes=[..., metrics_route(metrics)])  # or the client's own HTTP server

Metrics (labels in brackets):

- ``backbeat_task_attempts_total`` [task, queue, outcome] — outcome is succeeded,
  scheduled (failed, to be retried), failed (for good) or cancelled;
- ``backbeat_task_duration_seconds`` [task, queue] — a histogram of attempt durations;
- ``backbeat_tasks`` [queue, state] — pending, scheduled and running tasks now: from
  the store for a stored runner (every process's tasks), else from this runner.

The gauge is read when metrics are served: `metrics_route` reads it first (one
store call per queue); with another exporter, call ``await metrics.refresh()``
periodically (a queue seen once keeps reporting, at 0 when empty).
``backbeat worker --metrics HOST:PORT`` serves a worker's (`backbeat.worker_endpoint`).

Needs ``pip install "backbeat[prometheus]"`` (prometheus-client).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Histogram
from prometheus_client.metrics import Counter
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from backbeat.observers import Carried, Observer
from backbeat.routing import HandlerRoute, get
from backbeat.runner import Runner
from backbeat.status import TaskInfo, TaskState

__all__ = ["TaskMetrics", "instrument", "metrics_route"]

_LIVE = ("pending", "scheduled", "running")
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class TaskMetrics(Observer):
    content_type = CONTENT_TYPE_LATEST  # of `exposition()`

    def __init__(self, runner: Runner, registry: CollectorRegistry = REGISTRY) -> None:
        self.runner = runner
        self.registry = registry
        self.attempts = Counter(
            "backbeat_task_attempts",
            "Attempts of background tasks, by how they ended",
            ["task", "queue", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "backbeat_task_duration_seconds",
            "How long attempts of background tasks took",
            ["task", "queue"],
            buckets=_DURATIONS,
            registry=registry,
        )
        self.live: dict[str, dict[str, int]] = {}
        registry.register(_LiveTasks(self))

    def attempt(self, info: TaskInfo, carried: Carried | None) -> _Attempt:
        if info.queue not in self.live:  # known from now on, also when the store forgets it
            self.live[info.queue] = dict.fromkeys(_LIVE, 0)
        return _Attempt(self, info.name, info.queue)

    async def refresh(self) -> None:
        """Read the pending, scheduled and running tasks per queue (for the gauge)."""
        counts = await self.runner.queue_stats()
        for queue in self.live.keys() - counts.keys():
            counts[queue] = dict.fromkeys(_LIVE, 0)  # a series does not vanish when empty
        self.live = counts

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (the gauge as last refreshed)."""
        return generate_latest(self.registry)


class _Attempt:
    __slots__ = ("metrics", "name", "queue")

    def __init__(self, metrics: TaskMetrics, name: str, queue: str) -> None:
        self.metrics, self.name, self.queue = metrics, name, queue

    def end(self, state: TaskState, error: BaseException | None, seconds: float) -> None:
        self.metrics.attempts.labels(self.name, self.queue, state.value).inc()
        self.metrics.duration.labels(self.name, self.queue).observe(seconds)


class _LiveTasks(Collector):
    def __init__(self, metrics: TaskMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "backbeat_tasks", "Background tasks waiting or running now", labels=["queue", "state"]
        )
        for queue, counts in sorted(self.metrics.live.items()):
            for state in _LIVE:
                gauge.add_metric([queue, state], counts.get(state, 0))
        yield gauge


def instrument(runner: Runner, registry: CollectorRegistry = REGISTRY) -> TaskMetrics:
    """Count `runner`'s attempts into `registry`; returns the metrics (an observer)."""
    metrics = TaskMetrics(runner, registry)
    runner.add_observer(metrics)
    return metrics


def metrics_route(metrics: TaskMetrics, path: str = "/metrics") -> HandlerRoute:
    """A GET route serving `metrics.registry` in Prometheus's text format."""

    async def serve_metrics(request: Request) -> Response:
        await metrics.refresh()
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return get(path, name="metrics")(serve_metrics)
