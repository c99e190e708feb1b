"""``/events``: the shared snapshot as server-sent events, and the small JSON each carries.

Each viewer subscribes to the dashboard's one snapshot loop (`Hub`) and is sent the latest
snapshot when there is a new one; a viewer that reads slowly skips snapshots, nothing
queues up. A stream ends after `STREAM_SECONDS` (the browser reconnects by itself, after
the ``retry`` interval given): a server shutting down (uvicorn waits for open responses
before its lifespan ends) never waits on a viewer for longer; `Dashboard.close` ends them
at once.

A running task's page asks for its task too (``/events?task=ID``): each event then says
where that task is — from the snapshot while it is among the newest running tasks, else
read with one `get` — and once it has left running (finished, cancelled, waiting for a
retry, or gone), that event is the stream's last: the page shows the task's end and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from backbeat.dashboard.charts import points
from backbeat.dashboard.context import Context
from backbeat.dashboard.page_overview import chart_values, facts
from backbeat.dashboard.snapshot import BUCKETS, History, Snapshot
from backbeat.dashboard.source import Source
from backbeat.progress import read_report
from backbeat.stores import StoreError

STREAM_SECONDS = 25.0
RETRY_MS = 2000


def live_document(snapshot: Snapshot, history: History) -> dict[str, Any]:
    """What the page's script updates: counts, figures, progress of running tasks, charts."""
    running = []
    for task in snapshot.running:
        fraction, message = read_report(task.progress)
        running.append({"id": task.id, "fraction": fraction, "message": message})
    return {
        "tick": snapshot.tick,
        "reads": snapshot.reads,
        "taken_at": snapshot.taken_at,
        "error": snapshot.error,
        "counts": {**snapshot.counts, "total": sum(snapshot.counts.values())},
        "queues": snapshot.queues,
        "facts": facts(snapshot, history),
        "running": running,
        "charts": {
            name: {"points": points(values, BUCKETS), "top": f"(top {top})"}
            for name, (values, top) in chart_values(history).items()
        },
    }


async def watched_task(source: Source, snapshot: Snapshot, task_id: str) -> dict[str, Any]:
    """Where a task page's task is: its state (None: no such task now) and progress."""
    task = next((task for task in snapshot.running if task.id == task_id), None)
    if task is None:
        task = await source.get(task_id)
    if task is None:
        return {"id": task_id, "state": None, "fraction": None, "message": ""}
    fraction, message = read_report(task.progress)
    state = task.info(time.time()).state.value
    return {"id": task_id, "state": state, "fraction": fraction, "message": message}


async def events(context: Context, request: Request) -> Response:
    hub = context.hub
    task_id = request.query_params.get("task") or None

    async def stream() -> AsyncIterator[str]:
        subscriber = hub.subscribe()
        ends = time.monotonic() + STREAM_SECONDS
        try:
            yield f"retry: {RETRY_MS}\n\n"
            while (left := ends - time.monotonic()) > 0:
                try:
                    snapshot = await asyncio.wait_for(subscriber.next(), left)
                except TimeoutError:
                    return
                if snapshot is None:  # the dashboard closed
                    return
                document = live_document(snapshot, hub.history)
                task: dict[str, Any] | None = None
                if task_id is not None and snapshot.error is None:
                    # A store failing now: the next snapshot says so (stale); not this event.
                    with contextlib.suppress(StoreError):
                        task = await watched_task(context.source, snapshot, task_id)
                        document["task"] = task
                yield f"data: {json.dumps(document, separators=(',', ':'))}\n\n"
                if task is not None and task["state"] != "running":
                    return  # the page shows where the task ended: nothing more to follow
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
