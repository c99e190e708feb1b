"""BackbeatMiddleware gives other ASGI apps the supervised runner."""

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.responses import JSONResponse as StarletteJSON
from starlette.testclient import TestClient as StarletteTestClient

from backbeat import BackbeatMiddleware, BackgroundTask, BackgroundTasks, Runner
from backbeat.testing import TestClient, find_runner
from tests.apps import durable_tasks
from tests.helpers import asgi_call, take_the_store_away
from tests.serving import uvicorn


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


# --- with a store: a 2xx is a promise --------------------------------------------------------


def starlette_with(endpoint):
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/x", endpoint, methods=["POST"])])


def fastapi_with(endpoint):
    from fastapi import FastAPI

    api = FastAPI()
    api.post("/x")(endpoint)
    return api


STORE_FRAMEWORKS = pytest.mark.parametrize("make", [starlette_with, fastapi_with])


@STORE_FRAMEWORKS
@pytest.mark.anyio
async def test_with_a_store_tasks_are_written_before_the_response_starts(tmp_path, make):
    async def endpoint():
        job = BackgroundTask(durable_tasks.record_sync, "stored first")
        return StarletteJSON({"id": job.id}, background=job)

    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db", execute=False)
    app = BackbeatMiddleware(make(_plain(endpoint, make)), runner=runner)
    seen_at_start = []

    class Watch(list):
        def append(self, message):
            if message["type"] == "http.response.start":
                seen_at_start.append(runner.stats())
            super().append(message)

    sent = await asgi_call(app, sent=Watch())
    assert sent[0]["status"] == 200
    assert seen_at_start[0]["pending"] == 1  # held: written before the status line went out
    task_id = json.loads(sent[1]["body"])["id"]
    await asyncio.sleep(0.05)
    assert runner.get(task_id).state == "pending"  # activated after the body


def _plain(endpoint, make):
    # Starlette endpoints take the request; FastAPI ones are called with what they declare.
    if make is fastapi_with:
        return endpoint

    async def starlette_endpoint(request):
        return await endpoint()

    return starlette_endpoint


def closure_task():
    def inner() -> None: ...

    return BackgroundTask(inner)


@STORE_FRAMEWORKS
@pytest.mark.parametrize(
    "unstorable",
    [
        closure_task,
        lambda: BackgroundTask(lambda: None),
        lambda: BackgroundTask(durable_tasks.record_sync, object()),
    ],
    ids=["closure", "lambda", "not-json"],
)
def test_with_a_store_an_unstorable_task_is_a_500_and_nothing_is_stored(
    tmp_path, make, unstorable, backbeat_log
):
    async def endpoint():
        good = BackgroundTask(durable_tasks.record_sync, "good")
        return StarletteJSON({"ok": True}, background=BackgroundTasks([good, unstorable()]))

    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db")
    app = BackbeatMiddleware(make(_plain(endpoint, make)), runner=runner)
    durable_tasks.calls.clear()
    with TestClient(app) as client:  # raises what escapes the ASGI call: nothing must
        response = client.post("/x")
        assert response.status_code == 500
        assert response.json() == {"detail": "Internal Server Error"}
        counts = runner.stats()
    assert sum(counts.values()) == 0
    assert durable_tasks.calls == []
    assert any("cannot be stored, answering 500" in m for m in backbeat_log.messages())


@STORE_FRAMEWORKS
def test_with_a_store_down_the_middleware_answers_503(tmp_path, make):
    async def endpoint():
        return StarletteJSON({}, background=BackgroundTask(durable_tasks.record_sync, "x"))

    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db")
    app = BackbeatMiddleware(make(_plain(endpoint, make)), runner=runner)
    with StarletteTestClient(app) as client:
        take_the_store_away(tmp_path / "tasks.db")
        response = client.post("/x")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")


def test_with_a_store_a_task_the_response_never_runs_is_cancelled(tmp_path):
    async def endpoint(request):
        BackgroundTask(durable_tasks.record_sync, "made but not used")
        return StarletteJSON({})

    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db")
    app = BackbeatMiddleware(starlette_with(endpoint), runner=runner)
    with TestClient(app) as client:
        assert client.post("/x").status_code == 200
        counts = runner.stats()
    assert (counts["cancelled"], counts["pending"], counts["succeeded"]) == (1, 0, 0)


@pytest.mark.process
def test_fastapi_under_uvicorn_refuses_unstorable_tasks_and_keeps_its_promises(tmp_path):
    env = {"BACKBEAT_TEST_STORE": f"sqlite:///{tmp_path}/tasks.db"}
    with uvicorn("tests.apps.middleware_app:app", tmp_path, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/good", params={"label": "g1"}).status_code == 200
            assert client.post("/closure", params={"label": "c1"}).status_code == 500
            assert client.post("/not-json", params={"label": "n1"}).status_code == 500
            assert client.post("/good", params={"label": "g2"}).status_code == 200
        server.wait_for_mark("g2")
        log = server.log()
    assert "Exception in ASGI application" not in log
    assert sorted(server.marks()) == ["g1", "g2"]
