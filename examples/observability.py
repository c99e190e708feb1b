"""Traces and metrics of backbeat tasks: ``python -m examples.observability``.

Serves nothing: it sends three requests through the app in-process (one task
fails once and is retried), then prints the spans the OpenTelemetry SDK
exported (JSON, as the console exporter writes them) and what Prometheus would
scrape from ``/metrics``. docs/observability.md shows a captured run.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from backbeat import App, BackgroundTask, JSONResponse, Runner, post, task
from backbeat.otel import instrument as trace_tasks
from backbeat.prometheus import instrument as measure_tasks
from backbeat.prometheus import metrics_route
from backbeat.testing import TestClient

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
tracer = provider.get_tracer("examples.observability")
attempts: dict[str, int] = {}


@task(name="mail.send_welcome", queue="mail", retries=2, backoff=0.05)
async def send_welcome(email: str) -> None:
    attempts[email] = attempts.get(email, 0) + 1
    with tracer.start_as_current_span("smtp.send"):
        if email.startswith("flaky") and attempts[email] == 1:
            raise ConnectionError("smtp.example.com refused the connection")


@post("/signup/{email}")
async def signup(email: str) -> JSONResponse:
    job = BackgroundTask(send_welcome, email)
    return JSONResponse({"task": job.id}, status_code=202, background=job)


runner = Runner()
trace_tasks(runner, provider)
registry = CollectorRegistry()
metrics = measure_tasks(runner, registry)
app = App(routes=[signup, metrics_route(metrics)], runner=runner)


def traced(inner: App) -> object:
    """A span per request, as OpenTelemetry's ASGI middleware makes."""

    async def wrapped(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        with tracer.start_as_current_span(f"POST {scope['path']}"):
            await inner(scope, receive, send)

    wrapped.runner = inner.runner  # type: ignore[attr-defined]
    return wrapped


if __name__ == "__main__":
    with TestClient(traced(app)) as client:
        for email in ("ann@example.com", "flaky@example.com"):
            client.post(f"/signup/{email}")
        scraped = client.get("/metrics").text
    for span in spans.get_finished_spans():
        print(span.to_json(indent=2))
    print(scraped)
