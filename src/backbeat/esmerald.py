"""backbeat under an unchanged Esmerald app: ``install(app, runner)``.

    from esmerald import Esmerald, Gateway, JSONResponse, post
    from esmerald.background import BackgroundTask
    from backbeat.esmerald import install, status_gateways

    @post("/register", background=BackgroundTask(send_email, "Account created"))
    async def create_user(data: UserIn) -> JSONResponse:
        return JSONResponse({"message": "Created"})   # Esmerald alone drops the task here

    app = Esmerald(routes=[Gateway(handler=create_user)])
    runner = install(app, Runner(store="sqlite:///tasks.db"))
    app.add_route(...)  # or: routes=[..., *status_gateways(runner)]

`install` wraps the app in `BackbeatMiddleware` (the runner starts and drains with
the app's lifespan; with a store, tasks are stored before the response starts) and
changes how each handler turns its return value into a response, and nothing else:

- a handler that returns a `Response` keeps its decorator's ``background=``: the
  decorator's task runs first, then the response's (Esmerald alone runs only the
  response's — the bug of the reference page);
- every background task, Esmerald's own classes too, is run by backbeat's runner
  after the response: isolated (a failure is logged, the next task runs), with
  its ``@task`` policy, counted in ``runner.stats()``.

Handlers added after `install` are covered once the app starts (the middleware
looks again at start-up). `BackgroundTask`/`BackgroundTasks` here are backbeat's,
also subclasses of Esmerald's, so mypy accepts them in ``background=``.

Esmerald 3.9.4 needs Lilya < 0.29 (with 0.29 it fails with ``'_fast_http'``):
``pip install "backbeat[esmerald]"`` pins ``lilya<0.21``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from esmerald import Gateway, Request, get
from esmerald import background as esmerald_background
from esmerald.exceptions import HTTPException
from esmerald.routing.router import HTTPHandler

from backbeat import tasks as backbeat_tasks
from backbeat.middleware import BackbeatMiddleware
from backbeat.routing import declare_task_modules, reachable
from backbeat.runner import Runner
from backbeat.status import TaskInfo
from backbeat.status_routes import Auth, allows, shown_status

__all__ = ["BackgroundTask", "BackgroundTasks", "install", "status_gateways", "supervise"]


# Both bases declare `func`/`args`/`kwargs`/`tasks`; backbeat's code uses them at run time.
class BackgroundTask(  # type: ignore[misc]
    backbeat_tasks.BackgroundTask, esmerald_background.BackgroundTask
):
    """backbeat's `BackgroundTask`, typed as Esmerald's too."""


class BackgroundTasks(  # type: ignore[misc]
    backbeat_tasks.BackgroundTasks, esmerald_background.BackgroundTasks
):
    """backbeat's `BackgroundTasks`, typed as Esmerald's too."""


def install(app: Any, runner: Runner | None = None) -> Runner:
    """Run `runner` (a default `Runner()` if None) for the Esmerald `app`; returns it.

    Esmerald builds its middleware when it is made and serves its lifespan itself, so
    the runner goes inside the app's lifespan (started after the app's own start-up,
    drained before its shutdown) and `BackbeatMiddleware` around its middleware."""
    runner = runner if runner is not None else Runner()
    supervise(app)
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: Any) -> AsyncIterator[Any]:
        async with original(served) as state:
            supervise(app)  # handlers added since `install`
            declare_task_modules(runner, app)
            async with runner:
                yield state

    app.router.lifespan_context = lifespan
    app.middleware_stack = BackbeatMiddleware(app.build_middleware_stack(), runner=runner)
    app.state.backbeat_runner = runner  # for `backbeat worker app:app` and the TestClient
    return runner


def supervise(app: object) -> None:
    """Make every Esmerald handler reachable from `app` keep its decorator's task beside a
    returned response's, and hand both to backbeat as backbeat tasks."""
    for item in reachable(app):
        if isinstance(item, HTTPHandler) and "to_response" not in vars(item):
            item.to_response = _to_response(item, item.to_response)  # type: ignore[method-assign,assignment]


def _to_response(
    handler: HTTPHandler, original: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def to_response(app: Any, data: Any) -> Any:
        # Esmerald either keeps a returned response's task and drops the decorator's, or
        # (when the return annotation is not a response class) puts the decorator's in its
        # place: read the response's own before Esmerald sees it.
        own = getattr(data, "background", None) if _is_response(data) else None
        response = await original(app=app, data=data)
        decorator = handler.background
        if response is data:
            parts = [t for t in (decorator, own) if t is not None]
            if len(parts) == 2 and parts[0] is parts[1]:
                parts = parts[:1]
            response.background = (
                backbeat_tasks.BackgroundTasks([_ours(t) for t in parts]) if parts else None
            )
        elif response.background is not None:
            response.background = _ours(response.background)
        return response

    return to_response


def _is_response(data: Any) -> bool:
    return callable(data) and hasattr(data, "background") and hasattr(data, "status_code")


def _ours(task: Any) -> backbeat_tasks.BackgroundTask:
    """A backbeat task doing what an Esmerald/Lilya task object would."""
    if isinstance(task, backbeat_tasks.BackgroundTask):
        return task
    members = getattr(task, "tasks", None)
    if isinstance(members, list):
        group = bool(getattr(task, "as_group", False))
        return backbeat_tasks.BackgroundTasks([_ours(m) for m in members], as_group=group)
    return backbeat_tasks.BackgroundTask(_unwrapped(task.func), *task.args, **task.kwargs)


def _unwrapped(func: Any) -> Any:
    """The function a Lilya/Esmerald task was given (they wrap sync ones in an object that
    runs them in a thread): its name is what a store keeps, and backbeat runs it in a
    thread itself."""
    original = getattr(func, "_callable", None)
    if callable(original) and not getattr(func, "default_kwargs", None):
        return original
    return func


def status_gateways(
    runner: Runner,
    path: str = "/tasks",
    *,
    include_errors: bool = False,
    auth: Auth | None = None,
) -> list[Gateway]:
    """``GET {path}/{task_id}`` (a task's status, as `backbeat.status_route` shows it) and
    ``GET {path}/{task_id}/result`` (409 until it succeeded) as Esmerald gateways, for the
    app's ``routes=`` (in its OpenAPI schema, tag ``tasks``)."""

    async def lookup(task_id: str, request: Request) -> TaskInfo:
        if not await allows(auth, request):  # type: ignore[arg-type]
            raise HTTPException(status_code=403, detail="not allowed to see this task")
        info = await runner.aget(task_id)
        if info is None:
            raise HTTPException(status_code=404, detail=f"no task with id {task_id}")
        return info

    @get("/{task_id}", tags=["tasks"])
    async def task_status(task_id: str, request: Request) -> dict[str, Any]:
        return shown_status(await lookup(task_id, request), include_errors)

    @get("/{task_id}/result", tags=["tasks"])
    async def task_result(task_id: str, request: Request) -> Any:
        info = await lookup(task_id, request)
        if info.state.value != "succeeded":
            raise HTTPException(status_code=409, detail=f"task {task_id} is {info.state.value}")
        return info.result

    return [Gateway(path, handler=task_status), Gateway(path, handler=task_result)]
