"""The page routes: each reads what its page shows (within its query budget) and renders."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from backbeat.dashboard import (
    page_failures,
    page_overview,
    page_schedules,
    page_task,
    page_tasks,
    page_workers,
)
from backbeat.dashboard.context import Context, view_of, with_flash_cleared
from backbeat.dashboard.filters import parse_filter
from backbeat.dashboard.page_failures import FAILURES_SCANNED
from backbeat.dashboard.page_tasks import PAGE_SIZE
from backbeat.dashboard.pages import message_page

SEARCH_SCAN = 10_000


def _page(request: Request, text: str, status: int = 200) -> Response:
    return with_flash_cleared(request, HTMLResponse(text, status_code=status))


class Pages:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def overview(self, request: Request) -> Response:
        view = view_of(request, self.context)
        snapshot = await self.context.hub.current()
        return _page(request, page_overview.render(view, snapshot, self.context.hub.history))

    async def tasks(self, request: Request) -> Response:
        view = view_of(request, self.context)
        where = parse_filter(request.query_params)
        before = request.query_params.get("before") or None
        page = await self.context.source.search(
            where, limit=PAGE_SIZE, before=before, scan=SEARCH_SCAN
        )
        snapshot = await self.context.hub.current()
        return _page(request, page_tasks.render(view, where, page, snapshot, before))

    async def task(self, request: Request) -> Response:
        view = view_of(request, self.context)
        task_id = request.path_params["task_id"]
        task = await self.context.source.get(task_id)
        if task is None:
            text = f"No task with id {task_id}: unknown, or purged."
            return _page(request, message_page(view, "No such task", text), 404)
        attempts = await self.context.source.attempts(task_id)
        back = view.url(f"tasks/{task_id}")
        return _page(request, page_task.render(view, task, attempts, self.context.redact, back))

    async def failures(self, request: Request) -> Response:
        view = view_of(request, self.context)
        groups = await self.context.source.failure_groups(FAILURES_SCANNED)
        return _page(request, page_failures.render(view, groups))

    async def workers(self, request: Request) -> Response:
        view = view_of(request, self.context)
        snapshot = await self.context.hub.current()
        return _page(request, page_workers.render(view, snapshot))

    async def schedules(self, request: Request) -> Response:
        view = view_of(request, self.context)
        snapshot = await self.context.hub.current()
        return _page(request, page_schedules.render(view, snapshot))
