"""OpenTelemetry traces: a span per attempt, linked to the request that made the task.

    from backbeat.otel import instrument
    instrument(runner)                    # the global tracer provider, or tracer_provider=...

Each attempt is a span named after the task (kind CONSUMER), current while the task
runs (the task's own spans are its children), with the attributes
``backbeat.task.id``, ``backbeat.task.name``, ``backbeat.task.attempt``,
``backbeat.task.queue`` and ``backbeat.task.outcome`` (succeeded, scheduled for a
retry, failed, cancelled), plus the messaging conventions' ``messaging.system``,
``messaging.operation.type`` and ``messaging.message.id``. A failed attempt records
its exception and an ERROR status.

The span is a root *linked* to the span that was current where the task was handed
over (the request's), not its child: the request has long ended when the task runs,
and a retry may run an hour later. For stored tasks the W3C trace context
(``traceparent``, ``tracestate``) is stored with the task, so a worker in another
process links to the same request span.

Needs ``pip install "backbeat[otel]"`` (opentelemetry-api; configure an SDK and an
exporter as for the rest of the app).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from backbeat.observers import Carried, Observer
from backbeat.runner import Runner
from backbeat.status import FAILED, SCHEDULED, TaskInfo, TaskState

__all__ = ["TracingObserver", "instrument"]


class TracingObserver(Observer):
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("backbeat", tracer_provider=tracer_provider)

    def carry(self) -> dict[str, str] | None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier or None

    def attempt(self, info: TaskInfo, carried: Carried | None) -> _AttemptSpan:
        made_in = propagate.extract(carried) if carried else otel_context.get_current()
        origin = trace.get_current_span(made_in).get_span_context()
        span = self.tracer.start_span(
            info.name,
            context=otel_context.Context(),  # a root: the request is over
            kind=SpanKind.CONSUMER,
            links=[Link(origin)] if origin.is_valid else None,
            attributes={
                "backbeat.task.id": info.id,
                "backbeat.task.name": info.name,
                "backbeat.task.attempt": info.attempts,
                "backbeat.task.queue": info.queue,
                "messaging.system": "backbeat",
                "messaging.operation.type": "process",
                "messaging.message.id": info.id,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return _AttemptSpan(span, token)


class _AttemptSpan:
    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: Any) -> None:
        self.span = span
        self.token = token

    def end(self, state: TaskState, error: BaseException | None, seconds: float) -> None:
        self.span.set_attribute("backbeat.task.outcome", state.value)
        if error is not None and state in (FAILED, SCHEDULED):
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        otel_context.detach(self.token)
        self.span.end()


def instrument(
    runner: Runner, tracer_provider: trace.TracerProvider | None = None
) -> TracingObserver:
    """Trace every attempt of `runner`'s tasks; returns the observer it added."""
    observer = TracingObserver(tracer_provider)
    runner.add_observer(observer)
    return observer
