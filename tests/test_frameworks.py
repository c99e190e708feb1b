"""backbeat tasks as the `background=` of other frameworks' responses (tier 1).

Each framework awaits `response.background()`; a backbeat task brings its own
isolation, so a failing task neither skips its siblings nor escapes the ASGI
call. The control tests show what the frameworks' own classes do instead.
"""

import pytest
from starlette.testclient import TestClient

from backbeat import BackgroundTask, BackgroundTasks


def explode() -> None:
    raise RuntimeError("task failed")


def tasks_for(log: list[str]) -> BackgroundTasks:
    return BackgroundTasks([BackgroundTask(explode), BackgroundTask(log.append, "sibling ran")])


def starlette_app(background_factory):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        return JSONResponse({"ok": True}, background=background_factory())

    return Starlette(routes=[Route("/", endpoint)])


def fastapi_app(background_factory):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/")
    async def endpoint():
        return JSONResponse({"ok": True}, background=background_factory())

    return app


def lilya_app(background_factory):
    from lilya.apps import Lilya
    from lilya.responses import JSONResponse
    from lilya.routing import Path

    async def endpoint():
        return JSONResponse({"ok": True}, background=background_factory())

    return Lilya(routes=[Path("/", endpoint)])


FRAMEWORKS = [starlette_app, fastapi_app, lilya_app]


@pytest.mark.parametrize("make_app", FRAMEWORKS, ids=lambda f: f.__name__)
def test_backbeat_tasks_are_isolated_in_other_frameworks(make_app, backbeat_log):
    log: list[str] = []
    app = make_app(lambda: tasks_for(log))
    # raise_server_exceptions=True: anything escaping the ASGI call fails the test.
    response = TestClient(app).get("/")
    assert response.status_code == 200
    assert log == ["sibling ran"]
    [failure] = backbeat_log.records
    assert "explode" in failure.getMessage()


@pytest.mark.parametrize("make_app", FRAMEWORKS, ids=lambda f: f.__name__)
def test_backbeat_groups_are_isolated_in_other_frameworks(make_app):
    log: list[str] = []

    def group() -> BackgroundTasks:
        return BackgroundTasks(tasks_for(log).tasks, as_group=True)

    response = TestClient(make_app(group)).get("/")
    assert response.status_code == 200
    assert log == ["sibling ran"]


def test_control_starlettes_own_tasks_skip_siblings_and_escape():
    from starlette.background import BackgroundTasks as StarletteTasks

    log: list[str] = []

    def starlette_tasks() -> StarletteTasks:
        tasks = StarletteTasks()
        tasks.add_task(explode)
        tasks.add_task(log.append, "sibling ran")
        return tasks

    with pytest.raises(RuntimeError, match="task failed"):
        TestClient(starlette_app(starlette_tasks)).get("/")
    assert log == []
