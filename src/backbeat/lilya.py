"""backbeat in a Lilya app: task classes typed as Lilya's, status routes as Lilya paths.

    from lilya.apps import Lilya
    from backbeat import BackbeatMiddleware, Runner
    from backbeat.lilya import BackgroundTask, status_paths

    runner = Runner(store="sqlite:///tasks.db")
    app = BackbeatMiddleware(Lilya(routes=[..., *status_paths(runner)]), runner=runner)

`BackbeatMiddleware` runs the runner with the app's lifespan and supervises the
backbeat tasks the app's responses hand over. `BackgroundTask`/`BackgroundTasks`
here are backbeat's, also subclasses of Lilya's `Task`/`Tasks`, so mypy accepts
them as a Lilya response's ``background=``. `status_paths` answers a task's status
and result as native `lilya.routing.Path` objects (backbeat's own route objects
are not Lilya routes: Lilya's router would fail on them at request time).

Needs ``pip install "backbeat[lilya]"``; nothing here is imported otherwise.
"""

from __future__ import annotations

from lilya import background as lilya_background
from lilya.requests import Request
from lilya.responses import JSONResponse
from lilya.routing import Path

from backbeat import tasks as backbeat_tasks
from backbeat.runner import Runner
from backbeat.status import TaskInfo
from backbeat.status_routes import Auth, allows, shown_status

__all__ = ["BackgroundTask", "BackgroundTasks", "status_paths"]


# Both bases declare `func`/`args`/`kwargs`/`tasks`; at run time backbeat's code uses them,
# Lilya's class lends its type (and its slots).
class BackgroundTask(backbeat_tasks.BackgroundTask, lilya_background.Task):  # type: ignore[misc]
    """backbeat's `BackgroundTask`, typed as Lilya's `Task` too."""


class BackgroundTasks(  # type: ignore[misc]
    backbeat_tasks.BackgroundTasks, lilya_background.Tasks
):
    """backbeat's `BackgroundTasks`, typed as Lilya's `Tasks` too."""


def status_paths(
    runner: Runner,
    path: str = "/tasks/{task_id}",
    *,
    include_errors: bool = False,
    auth: Auth | None = None,
) -> list[Path]:
    """``GET {path}`` (a task's status, as `backbeat.status_route` shows it) and
    ``GET {path}/result`` (a finished task's value; 409 until it succeeded)."""

    async def lookup(request: Request) -> TaskInfo | JSONResponse:
        if not await allows(auth, request):  # type: ignore[arg-type]
            return _problem(403, "not allowed to see this task")
        task_id = request.path_params["task_id"]
        info = await runner.aget(task_id)
        return _problem(404, f"no task with id {task_id}") if info is None else info

    async def task_status(request: Request) -> JSONResponse:
        info = await lookup(request)
        if isinstance(info, JSONResponse):
            return info
        return JSONResponse(shown_status(info, include_errors))

    async def task_result(request: Request) -> JSONResponse:
        info = await lookup(request)
        if isinstance(info, JSONResponse):
            return info
        if info.state.value != "succeeded":
            return _problem(409, f"task {info.id} is {info.state.value}")
        return JSONResponse(info.result)

    return [
        Path(path, task_status, methods=["GET"], name="task_status"),
        Path(f"{path}/result", task_result, methods=["GET"], name="task_result"),
    ]


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
