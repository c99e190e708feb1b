"""backbeat in a Litestar app: one plugin.

    from litestar import Litestar, post
    from litestar.di import NamedDependency
    from litestar.params import FromQuery
    from backbeat import Runner
    from backbeat.litestar import BackbeatPlugin, BackgroundTask, BackgroundTasks

    plugin = BackbeatPlugin(Runner(store="sqlite:///tasks.db"))

    @post("/signup", background=BackgroundTask(audit, "signup"))
    async def signup(
        email: FromQuery[str], tasks: NamedDependency[BackgroundTasks]
    ) -> dict[str, str]:
        tasks.add_task(send_welcome, email)
        return {"ok": "yes"}

    app = Litestar([signup, plugin.status_router()], plugins=[plugin])

The plugin runs the runner in the app's lifespan, wraps the app in
`BackbeatMiddleware` (tasks supervised; with a store, stored before the response
starts), injects ``tasks: NamedDependency[BackgroundTasks]`` (one per request,
handed to the runner after the response; not run if the handler raises; the
bare ``tasks: BackgroundTasks`` works on Litestar 2 with a deprecation warning,
and not on Litestar 3), and runs a handler's
decorator ``background=`` also when the handler returns a `Response` with its own
(decorator's first, then the response's: Litestar itself drops the decorator's).
`BackgroundTask` and `BackgroundTasks` here are backbeat's, also typed as
Litestar's, so mypy accepts them wherever Litestar takes a background.

Needs ``pip install "backbeat[litestar]"``; nothing here is imported otherwise.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar import background_tasks as litestar_background
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp, Receive, Scope, Send

from backbeat import tasks as backbeat_tasks
from backbeat.checks import check_app
from backbeat.middleware import BackbeatMiddleware, InjectedTasks, inject_tasks
from backbeat.runner import Runner
from backbeat.status import TaskInfo
from backbeat.status_routes import Auth, allows, status_fields

__all__ = ["BackbeatPlugin", "BackgroundTask", "BackgroundTasks", "TaskStatus"]


# Both bases declare `args`/`kwargs`/`tasks` with their own annotations; at run time
# backbeat's attributes are the ones used, Litestar's class only lends its type.
class BackgroundTask(  # type: ignore[misc]
    backbeat_tasks.BackgroundTask, litestar_background.BackgroundTask
):
    """backbeat's `BackgroundTask`, typed as Litestar's too."""


class BackgroundTasks(  # type: ignore[misc]
    backbeat_tasks.BackgroundTasks, litestar_background.BackgroundTasks
):
    """backbeat's `BackgroundTasks`, typed as Litestar's too."""


class _InjectedTasks(InjectedTasks, BackgroundTasks):  # type: ignore[misc]
    """What ``tasks: BackgroundTasks`` receives (Litestar checks it is one)."""


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "backbeat_litestar_scope", default=None
)


class TaskStatus(msgspec.Struct, omit_defaults=True):
    """A task's status as the status route shows it."""

    id: str
    state: str
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    name: str | None = None  # with include_errors
    error: str | None = None  # with include_errors


class BackbeatPlugin(InitPluginProtocol):
    def __init__(self, runner: Runner | None = None, *, dependency: str = "tasks") -> None:
        self.runner = runner if runner is not None else Runner()
        self.dependency = dependency

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.middleware.insert(0, self._middleware)  # outermost
        app_config.lifespan.append(self._lifespan)
        app_config.dependencies[self.dependency] = Provide(_request_tasks)
        app_config.after_request = _with_decorator_background(app_config.after_request)
        app_config.state["backbeat_runner"] = self.runner  # `backbeat worker`, TestClient
        for handler in app_config.route_handlers:
            module = getattr(getattr(handler, "fn", None), "__module__", None)
            if isinstance(module, str):
                self.runner.register_module(module)
        return app_config

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        supervised = BackbeatMiddleware(app, runner=self.runner)  # type: ignore[arg-type]

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            token = _scope.set(scope)
            try:
                await supervised(scope, receive, send)  # type: ignore[arg-type]
            finally:
                _scope.reset(token)

        return middleware

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        # A handler's task that a store could not run fails here, not every request.
        check_app(self.runner, app)
        async with self.runner:
            yield

    def status_router(
        self, path: str = "/tasks", *, include_errors: bool = False, auth: Auth | None = None
    ) -> Router:
        """``GET {path}/{task_id}`` (the status) and ``{path}/{task_id}/result`` as Litestar
        handlers (in its OpenAPI schema), as `backbeat.status_route` shows them."""
        runner = self.runner

        # The id is read from the request, not declared as a parameter: a parameter
        # would need Litestar 2.25's `FromPath` to be warning-free, and 2.12 lacks it.
        async def lookup(request: Request[Any, Any, Any]) -> TaskInfo:
            task_id = request.path_params["task_id"]
            if not await allows(auth, request):  # type: ignore[arg-type]
                raise NotAuthorizedException("not allowed to see this task", status_code=403)
            info = await runner.aget(task_id)
            if info is None:
                raise HTTPException(f"no task with id {task_id}", status_code=404)
            return info

        @get("/{task_id:str}", tags=["tasks"])
        async def task_status(request: Request[Any, Any, Any]) -> TaskStatus:
            info = await lookup(request)
            return TaskStatus(**status_fields(info, include_errors))

        @get("/{task_id:str}/result", tags=["tasks"])
        async def task_result(request: Request[Any, Any, Any]) -> Any:
            info = await lookup(request)
            if info.state.value != "succeeded":
                raise HTTPException(f"task {info.id} is {info.state.value}", status_code=409)
            return info.result

        return Router(path=path, route_handlers=[task_status, task_result])


async def _request_tasks(request: Request[Any, Any, Any]) -> AsyncIterator[BackgroundTasks]:
    tasks = inject_tasks(request.scope, _InjectedTasks)  # type: ignore[arg-type]
    try:
        yield tasks  # type: ignore[misc]
    except Exception:
        tasks.dropped = True  # the handler failed: its tasks do not run
        raise


def _with_decorator_background(after_request: Any) -> Callable[[Response[Any]], Any]:
    async def merged(response: Response[Any]) -> Response[Any]:
        if after_request is not None:  # the app's own hook first
            response = after_request(response)
            if inspect.isawaitable(response):
                response = await response
        scope = _scope.get()
        handler = scope.get("route_handler") if scope is not None else None
        decorator = getattr(handler, "background", None)
        own = response.background
        if decorator is not None and own is not None and own is not decorator:
            response.background = BackgroundTasks([decorator, own])  # type: ignore[list-item]
        return response

    return merged
