"""backbeat.otel: a span per attempt, linked (not parented) to the span where the task was
handed over, also when a runner of another process claims it from the store. The SDK's
in-memory exporter records what was exported."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backbeat import App, BackgroundTask, JSONResponse, Runner, post, task
from backbeat.otel import instrument
from backbeat.testing import TestClient

pytestmark = pytest.mark.anyio

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("tests")
tries: dict[str, int] = {}


@task(name="otel.send", retries=1, backoff=0.01, queue="mail")
async def send(to: str) -> str:
    tries[to] = tries.get(to, 0) + 1
    with tracer.start_as_current_span("smtp"):  # the task's own span
        if to == "flaky" and tries[to] == 1:
            raise ConnectionError("smtp down")
    return f"sent:{to}"


@pytest.fixture(autouse=True)
def fresh():
    exporter.clear()
    tries.clear()


def traced(app):
    """An ASGI wrapper opening a span per request, as OpenTelemetry's ASGI middleware does."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        with tracer.start_as_current_span(f"{scope['method']} {scope['path']}"):
            await app(scope, receive, send)

    wrapped.runner = app.runner
    return wrapped


def spans(name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


@post("/send/{to}")
async def handler(to: str) -> JSONResponse:
    job = BackgroundTask(send, to)
    return JSONResponse({"id": job.id}, background=job)


def test_an_attempt_is_a_root_span_linked_to_the_request_span():
    runner = Runner()
    instrument(runner, provider)
    with TestClient(traced(App(routes=[handler], runner=runner))) as client:
        task_id = client.post("/send/ann").json()["id"]
    [request] = spans("POST /send/ann")
    [attempt] = spans("otel.send")
    [smtp] = spans("smtp")
    assert attempt.parent is None and attempt.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in attempt.links] == [request.context.span_id]
    assert attempt.context.trace_id != request.context.trace_id
    assert smtp.parent.span_id == attempt.context.span_id  # the task's spans are children
    assert dict(attempt.attributes) == {
        "backbeat.task.id": task_id,
        "backbeat.task.name": "otel.send",
        "backbeat.task.attempt": 1,
        "backbeat.task.queue": "mail",
        "backbeat.task.outcome": "succeeded",
        "messaging.system": "backbeat",
        "messaging.operation.type": "process",
        "messaging.message.id": task_id,
    }
    assert attempt.start_time >= request.end_time  # it ran after the response


def test_a_failed_attempt_records_its_exception_and_the_retry_is_another_span():
    runner = Runner()
    instrument(runner, provider)
    with TestClient(traced(App(routes=[handler], runner=runner))) as client:
        client.post("/send/flaky")
    first, second = sorted(spans("otel.send"), key=lambda s: s.attributes["backbeat.task.attempt"])
    assert first.attributes["backbeat.task.outcome"] == "scheduled"
    assert first.status.status_code is StatusCode.ERROR
    assert "ConnectionError: smtp down" in first.status.description
    assert [e.name for e in first.events] == ["exception"]
    assert second.attributes["backbeat.task.outcome"] == "succeeded"
    assert second.status.status_code is StatusCode.UNSET
    assert first.links[0].context == second.links[0].context  # the same request


async def test_a_stored_task_carries_the_trace_context_to_another_runner(tmp_path):
    store = f"sqlite:///{tmp_path}/tasks.db"
    writer = Runner(store=store, execute=False)  # an app behind workers
    worker = Runner(store=store)  # another process's runner: it never saw the request
    instrument(writer, provider)
    instrument(worker, provider)
    async with writer:
        with tracer.start_as_current_span("POST /send/bob") as request:
            await writer.asubmit(BackgroundTask(send, "bob"))
    assert spans("otel.send") == []
    async with worker:
        await worker.join()
    [attempt] = spans("otel.send")
    assert [link.context.span_id for link in attempt.links] == [request.get_span_context().span_id]
    assert [link.context.trace_id for link in attempt.links] == [
        request.get_span_context().trace_id
    ]


async def test_without_a_current_span_there_is_no_link():
    runner = Runner()
    instrument(runner, provider)
    async with runner:
        runner.submit(BackgroundTask(send, "cron"))
        await runner.join()
    [attempt] = spans("otel.send")
    assert not attempt.links and trace.get_current_span() is trace.INVALID_SPAN
