"""Serving a task's status over HTTP: ``status_route(runner, "/tasks/{task_id}")``.

Whoever knows a task id can ask for its status, so the route shows by default
only what does not leak: the id, the state, the attempts and the timestamps.
The task's name and error text (which may hold an address, a query, a
message from another service) are added only with ``include_errors=True``.
``auth`` decides who may look at all: a callable taking the request and
returning a bool (or an awaitable of one); False answers 403. To answer 401
instead (a missing credential), raise ``HTTPException(401)`` from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import compile_path

from backbeat.responses import JSONResponse
from backbeat.routing import HandlerRoute, get
from backbeat.status import TaskInfo

Auth = Callable[[Request], bool | Awaitable[bool]]
"""Who may see tasks: called with the request, returns (or awaits to) True to allow."""


class TaskLookup(Protocol):
    """What a status route reads tasks from: a `Runner`, or anything that finds one by id."""

    async def aget(self, task_id: str) -> TaskInfo | None: ...


_PUBLIC_FIELDS = ("id", "state", "attempts", "created_at", "started_at", "finished_at")


def shown_status(info: TaskInfo, include_errors: bool) -> dict[str, Any]:
    """What a status route shows of a task, as JSON-ready values."""
    shown: dict[str, Any] = info.as_dict()
    return shown if include_errors else {key: shown[key] for key in _PUBLIC_FIELDS}


def status_fields(info: TaskInfo, include_errors: bool) -> dict[str, Any]:
    """What a status route shows of a task (times as datetimes, for a framework's model)."""
    return {
        "id": info.id,
        "state": info.state.value,
        "attempts": info.attempts,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "name": info.name if include_errors else None,
        "error": info.error if include_errors else None,
    }


async def allows(auth: Auth | None, request: Request) -> bool:
    """Whether `auth` (if any) lets this request see tasks."""
    if auth is None:
        return True
    allowed = auth(request)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    return bool(allowed)


async def check_auth(auth: Auth | None, request: Request) -> None:
    """403 unless `auth` (if any) allows the request."""
    if not await allows(auth, request):
        raise HTTPException(403, "not allowed to see this task")


def status_route(
    runner: TaskLookup,
    path: str = "/tasks/{task_id}",
    *,
    name: str = "task_status",
    include_errors: bool = False,
    auth: Auth | None = None,
) -> HandlerRoute:
    """A GET route answering a task's status as JSON; 404 for an unknown id.

    ``backbeat.status_route(runner, "/tasks/{task_id}")``: put it in ``App(routes=...)``.
    `runner` is what the tasks are looked up in (anything with ``aget``); `path` must
    contain ``{task_id}``; ``include_errors=True`` adds the task's name and error text;
    `auth` guards the route (see the module's docstring).
    """
    if "task_id" not in compile_path(path)[2]:
        raise ValueError(f"status_route path must contain {{task_id}}, got {path!r}")
    if auth is not None and not callable(auth):
        raise TypeError(f"status_route(auth=...) must be a callable(request) -> bool, got {auth!r}")

    async def task_status(task_id: str, request: Request) -> JSONResponse:
        await check_auth(auth, request)
        info = await runner.aget(task_id)
        if info is None:
            raise HTTPException(404, f"no task with id {task_id}")
        return JSONResponse(shown_status(info, include_errors), status_code=200)

    return get(path, name=name)(task_status)
