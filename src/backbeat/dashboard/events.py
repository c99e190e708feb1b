"""``/events``: the shared snapshot as server-sent events, and the small JSON each carries.

Each viewer subscribes to the dashboard's one snapshot loop (`Hub`) and is sent the latest
snapshot when there is a new one; a viewer that reads slowly skips snapshots, nothing
queues up. A stream ends after `STREAM_SECONDS` (the browser reconnects by itself, after
the ``retry`` interval given): a server shutting down (uvicorn waits for open responses
before its lifespan ends) never waits on a viewer for longer; `Dashboard.close` ends them
at once.
"""

from __future__ import annotations

import asyncio
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
from backbeat.progress import read_report

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


async def events(context: Context, request: Request) -> Response:
    hub = context.hub

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
                yield f"data: {json.dumps(document, separators=(',', ':'))}\n\n"
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
