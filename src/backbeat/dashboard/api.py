"""The JSON API: what the pages show, as JSON, and the actions (same access, same origin
check; no confirmation step: a script says exactly what it wants). ``/metrics``: the
snapshot's counts as Prometheus text, when prometheus-client is installed."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from pydantic_core import from_json
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from backbeat.dashboard.action_routes import check_action, perform
from backbeat.dashboard.context import Context
from backbeat.dashboard.events import live_document
from backbeat.dashboard.filters import BadInput, parse_count, parse_filter
from backbeat.dashboard.page_failures import FAILURES_SCANNED
from backbeat.dashboard.page_task import arguments_of
from backbeat.dashboard.redact import Redact
from backbeat.stores.base import StoredStatus

SEARCH_SCAN = 10_000
MAX_LIMIT = 500


def task_document(task: StoredStatus, redact: Redact, *, full: bool) -> dict[str, Any]:
    shown: dict[str, Any] = task.info(time.time()).as_dict()
    shown.update(worker=task.worker, priority=task.priority, due_at=task.due_at)
    if full:
        shown.update(arguments=arguments_of(task, redact), traceback=task.traceback)
    return shown


class Api:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def overview(self, request: Request) -> Response:
        hub = self.context.hub
        snapshot = await hub.current()
        document = live_document(snapshot, hub.history)
        document.update(
            more_queues=snapshot.more_queues,
            paused_queues=snapshot.paused,
            oldest_due=snapshot.oldest_due,
            workers=len(snapshot.workers),
            throughput=hub.history.throughput(),
            failure_rate=hub.history.failure_rate(),
        )
        return JSONResponse(document)

    async def tasks(self, request: Request) -> Response:
        params = request.query_params
        where = parse_filter(params)
        limit = parse_count(params, "limit", 50, 1, MAX_LIMIT)
        page = await self.context.source.search(
            where, limit=limit, before=params.get("before") or None, scan=SEARCH_SCAN
        )
        redact = self.context.redact
        return JSONResponse(
            {
                "tasks": [task_document(task, redact, full=False) for task in page.tasks],
                "cursor": page.cursor,
                "scanned": page.scanned,
            }
        )

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        task = await self.context.source.get(task_id)
        if task is None:
            return JSONResponse({"error": f"no task with id {task_id}"}, status_code=404)
        document = task_document(task, self.context.redact, full=True)
        attempts = await self.context.source.attempts(task_id)
        document["attempts_history"] = (
            None if attempts is None else [asdict(attempt) for attempt in attempts]
        )
        return JSONResponse(document)

    async def failures(self, request: Request) -> Response:
        groups = await self.context.source.failure_groups(FAILURES_SCANNED)
        return JSONResponse({"groups": [asdict(group) for group in groups]})

    async def workers(self, request: Request) -> Response:
        snapshot = await self.context.hub.current()
        return JSONResponse(
            {
                "workers": [
                    {**worker.document(), "expires_at": worker.expires_at}
                    for worker in snapshot.workers
                ],
                "queues": snapshot.queues,
                "more_queues": snapshot.more_queues,
                "paused_queues": snapshot.paused,
                "running": [
                    {"id": task.id, "name": task.name, "worker": task.worker}
                    for task in snapshot.running
                ],
            }
        )

    async def schedules(self, request: Request) -> Response:
        snapshot = await self.context.hub.current()
        return JSONResponse(
            {
                "schedules": snapshot.schedules,
                "limits": [asdict(gate) for gate in snapshot.gates],
            }
        )

    async def action(self, request: Request) -> Response:
        action = request.path_params["action"]
        check_action(self.context, request, action)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse(
                {"error": "send the action's terms as JSON (Content-Type: application/json)"},
                status_code=415,
            )
        try:
            body = from_json(await request.body())
        except ValueError as error:
            raise BadInput(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise BadInput('the body must be a JSON object: {"ids": [...]} or {"filter": {...}}')
        fields = dict(body)
        if isinstance(body.get("filter"), dict):
            fields.update({key: str(value) for key, value in body["filter"].items()})
            fields["scope"] = "filter"
        done = await perform(self.context, request, action, fields)
        return JSONResponse({"action": action, "count": done.count, "message": done.said})

    async def metrics(self, request: Request) -> Response:
        try:
            from prometheus_client import CollectorRegistry, Gauge, generate_latest
        except ImportError:
            return PlainTextResponse(
                "/metrics needs prometheus-client: pip install 'backbeat[prometheus]'",
                status_code=404,
            )
        snapshot = await self.context.hub.current()
        registry = CollectorRegistry()
        tasks = Gauge(
            "backbeat_store_tasks", "Tasks in the store by state", ["state"], registry=registry
        )
        for state, count in snapshot.counts.items():
            tasks.labels(state).set(count)
        queued = Gauge(
            "backbeat_store_queue_tasks",
            "Tasks in the store by queue and state",
            ["queue", "state"],
            registry=registry,
        )
        for queue, counts in snapshot.queues.items():
            for state, count in counts.items():
                queued.labels(queue, state).set(count)
        alive = Gauge("backbeat_store_workers", "Workers alive", registry=registry)
        alive.set(len(snapshot.workers))
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
