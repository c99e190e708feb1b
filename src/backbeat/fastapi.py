"""backbeat in a FastAPI app: injected tasks, the runner's lifespan, the status routes.

    from fastapi import FastAPI
    from backbeat import Runner
    from backbeat.fastapi import Tasks, install, status_router

    app = FastAPI()
    runner = install(app, Runner(store="sqlite:///tasks.db"))
    app.include_router(status_router(runner), prefix="/tasks")

    @app.post("/signup")
    async def signup(email: str, tasks: Tasks) -> dict[str, str]:
        tasks.add_task(send_welcome, email)
        return {"ok": "yes"}

`install` wraps the app in `BackbeatMiddleware`: the runner starts and drains
with the app's lifespan (around the user's own), backbeat apps mounted inside get
their runners started too, and with a store every task a request makes is stored
before the response starts. ``tasks: Tasks`` is a backbeat `BackgroundTasks`, one
per request (shared with the request's dependencies, like FastAPI's own): run by
the runner after the response, each task isolated, with its ``@task`` policy; not
run if the handler raises.

FastAPI's own ``BackgroundTasks`` parameter works too once `install` has run:
FastAPI then injects a `SupervisedBackgroundTasks` (its own class, subclassed)
whose tasks, in a request served through the middleware, go to the runner
exactly as ``Tasks``' do, when FastAPI hands them to the response. Elsewhere
(an app not installed) it behaves as FastAPI's. ``Tasks`` gives more:
``add_task`` returns the task (its id), and a handler may pass it to a response
of its own.

Needs ``pip install "backbeat[fastapi]"``; nothing here is imported otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Annotated, Any, ParamSpec

import fastapi
import fastapi.dependencies.utils
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.background import BackgroundTask as StarletteTask

from backbeat.applications import with_runner
from backbeat.middleware import BackbeatMiddleware, inject_tasks
from backbeat.runner import Runner
from backbeat.status import TaskInfo
from backbeat.status_routes import Auth, check_auth, status_fields
from backbeat.tasks import BackgroundTasks, current_runner

__all__ = [
    "SupervisedBackgroundTasks",
    "TaskStatus",
    "Tasks",
    "install",
    "lifespan",
    "status_router",
]

logger = logging.getLogger("backbeat")
P = ParamSpec("P")


async def _request_tasks(request: Request) -> AsyncIterator[BackgroundTasks]:
    tasks = inject_tasks(request.scope)
    try:
        yield tasks
    except Exception:
        tasks.dropped = True  # the handler failed: like FastAPI's own, they do not run
        raise


Tasks = Annotated[BackgroundTasks, Depends(_request_tasks)]
"""A handler or dependency parameter: this request's backbeat tasks."""


class SupervisedBackgroundTasks(fastapi.BackgroundTasks):
    """What FastAPI injects for a ``BackgroundTasks`` parameter once `install` has run.

    Made while a request is served through `BackbeatMiddleware`, it keeps its tasks
    in a backbeat collection (stored ahead of the response with a store), which
    the response hands to the runner; FastAPI's rules stay: nothing runs if the
    handler raises, or if it returns a response with a ``background`` of its own
    (with a store, those are then cancelled, and logged). Made anywhere else, it
    is FastAPI's class, unchanged.
    """

    def __init__(self, tasks: Sequence[StarletteTask] | None = None) -> None:
        super().__init__(tasks)
        self.supervised = BackgroundTasks() if current_runner.get() is not None else None

    def add_task(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        if self.supervised is None:
            super().add_task(func, *args, **kwargs)
        else:
            self.supervised.add_task(func, *args, **kwargs)

    async def __call__(self) -> None:
        if self.supervised is not None:
            await self.supervised()
        await super().__call__()


def _supervise_fastapis_own_tasks() -> None:
    """Have FastAPI make `SupervisedBackgroundTasks` for its injected parameter (it
    makes them in one place, `solve_dependencies`, from this module-level name)."""
    solver = fastapi.dependencies.utils
    made_by_fastapi = getattr(solver, "BackgroundTasks", None)
    if made_by_fastapi is SupervisedBackgroundTasks:
        return
    if made_by_fastapi is not fastapi.BackgroundTasks:
        logger.warning(
            "backbeat: FastAPI %s does not make its injected BackgroundTasks where backbeat "
            "expects: they keep FastAPI's behaviour (inline); use backbeat.fastapi.Tasks",
            fastapi.__version__,
        )
        return
    setattr(solver, "BackgroundTasks", SupervisedBackgroundTasks)  # noqa: B010 - not exported


def install(app: FastAPI, runner: Runner | None = None) -> Runner:
    """Run `runner` (a default `Runner()` if None) for `app`; returns it.

    Call before the app starts serving. It adds `BackbeatMiddleware` as the
    outermost middleware, and has FastAPI inject `SupervisedBackgroundTasks` for
    its own ``BackgroundTasks`` parameter (in every app of the process; it only
    differs from FastAPI's in requests served through backbeat's middleware).
    """
    runner = runner if runner is not None else Runner()
    _supervise_fastapis_own_tasks()
    app.add_middleware(BackbeatMiddleware, runner=runner)
    app.state.backbeat_runner = runner  # for `backbeat worker app:app` and the TestClient
    return runner


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def lifespan(runner: Runner, inner: Lifespan | None = None) -> Lifespan:
    """A FastAPI lifespan that starts `runner` after `inner` (the app's own) has started
    and drains it before `inner` shuts down: ``FastAPI(lifespan=lifespan(runner, mine))``.

    For apps that start the runner without `install` (a runner that only writes
    tasks, say); with `install`, the middleware does this already.
    """

    return with_runner(runner, inner)


class TaskStatus(BaseModel):
    """A task's status as the status route shows it."""

    id: str
    state: str
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    name: str | None = None  # with include_errors
    error: str | None = None  # with include_errors


def status_router(
    runner: Runner,
    *,
    include_errors: bool = False,
    auth: Auth | None = None,
    tags: Sequence[str] = ("tasks",),
) -> APIRouter:
    """GET ``/{task_id}`` (the status) and ``/{task_id}/result`` (a finished task's value)
    as an `APIRouter` that shows in OpenAPI; include it with a prefix.

    As `backbeat.status_route`: the id, state, attempts and times only, unless
    ``include_errors``; ``auth(request) -> bool`` (or awaitable) guards both (403).
    """
    if auth is not None and not callable(auth):
        raise TypeError(
            f"status_router(auth=...) must be a callable(request) -> bool, got {auth!r}"
        )

    async def allowed(request: Request) -> None:
        await check_auth(auth, request)

    router = APIRouter(tags=list(tags), dependencies=[Depends(allowed)])

    async def lookup(task_id: str) -> TaskInfo:
        info = await runner.aget(task_id)
        if info is None:
            raise HTTPException(404, f"no task with id {task_id}")
        return info

    @router.get("/{task_id}", response_model=TaskStatus, response_model_exclude_none=True)
    async def task_status(task_id: str) -> TaskStatus:
        return TaskStatus(**status_fields(await lookup(task_id), include_errors))

    @router.get("/{task_id}/result", responses={409: {"description": "not succeeded (yet)"}})
    async def task_result(task_id: str) -> Any:
        info = await lookup(task_id)
        if info.state != "succeeded":
            raise HTTPException(409, f"task {task_id} is {info.state}")
        return info.result

    return router
