"""BackbeatMiddleware gives other ASGI apps the supervised runner."""

import asyncio
from contextlib import asynccontextmanager

import pytest
from starlette.testclient import TestClient as StarletteTestClient

from backbeat import BackbeatMiddleware, BackgroundTask, BackgroundTasks, Runner
from backbeat.testing import TestClient, find_runner


def explode() -> None:
    raise RuntimeError("task failed")


def starlette_app(endpoint_tasks, lifespan=None):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        tasks = endpoint_tasks()
        return JSONResponse({"ids": [t.id for t in tasks.tasks]}, background=tasks)

    return Starlette(routes=[Route("/", endpoint)], lifespan=lifespan)


def fastapi_app(endpoint_tasks, lifespan=None):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def endpoint():
        tasks = endpoint_tasks()
        return JSONResponse({"ids": [t.id for t in tasks.tasks]}, background=tasks)

    return app


FRAMEWORKS = [starlette_app, fastapi_app]


@pytest.mark.parametrize("make_app", FRAMEWORKS, ids=lambda f: f.__name__)
def test_tasks_are_handed_to_the_runner(make_app):
    log: list[str] = []

    async def slow(item: str) -> None:
        await asyncio.sleep(0.05)
        log.append(item)

    def tasks() -> BackgroundTasks:
        return BackgroundTasks(
            [BackgroundTask(explode), BackgroundTask(slow, "a"), BackgroundTask(log.append, "b")]
        )

    runner = Runner()
    app = BackbeatMiddleware(make_app(tasks), runner=runner)
    with TestClient(app, raise_task_exceptions=False) as client:
        assert runner.running
        ids = client.get("/").json()["ids"]
        assert log == ["a", "b"]  # in order, after the failing one
        assert [runner.get(i).state for i in ids] == ["failed", "succeeded", "succeeded"]
    assert not runner.running


@pytest.mark.parametrize("make_app", FRAMEWORKS, ids=lambda f: f.__name__)
def test_the_runner_drains_before_the_wrapped_apps_shutdown(make_app):
    events: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        events.append("task done")

    @asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = BackbeatMiddleware(
        make_app(lambda: BackgroundTasks([BackgroundTask(slow)]), lifespan=lifespan)
    )
    with StarletteTestClient(app) as client:
        client.get("/")
        events.append("answered")
    assert events == ["startup", "answered", "task done", "shutdown"]


def test_an_app_without_lifespan_support_still_gets_a_running_runner():
    log: list[str] = []
    task = BackgroundTask(log.append, "ran")

    async def bare(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await task()

    app = BackbeatMiddleware(bare)
    with TestClient(app) as client:
        assert app.runner.running
        assert client.get("/").text == "ok"
        assert log == ["ran"]
        assert app.runner.get(task.id).state == "succeeded"
    assert not app.runner.running


def test_find_runner_looks_through_middleware():
    runner = Runner()
    inner = BackbeatMiddleware(starlette_app(BackgroundTasks), runner=runner)

    class Outer:
        def __init__(self, app):
            self.app = app

    assert find_runner(Outer(inner)) is runner
    assert find_runner(object()) is None
