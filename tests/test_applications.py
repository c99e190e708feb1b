import asyncio
import logging
import time
from contextlib import asynccontextmanager

import pytest
from starlette.testclient import TestClient as StarletteTestClient

from backbeat import App, BackgroundTask, BackgroundTasks, JSONResponse, Runner, get, post
from backbeat.testing import TestClient
from tests.helpers import asgi_call


def test_an_app_has_a_runner_unless_told_otherwise():
    assert isinstance(App().runner, Runner)
    runner = Runner()
    assert App(runner=runner).runner is runner
    assert App(runner=False).runner is None
    with pytest.raises(TypeError, match="expects a Runner"):
        App(runner="yes")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_requests_asgi_call_ends_before_its_tasks_do():
    log: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.3)
        log.append("slow done")

    @post("/x", background=BackgroundTask(slow))
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(log.append, "injected")

    app = App(routes=[handler])
    async with app.runner:
        started = time.monotonic()
        sent = await asgi_call(app)
        assert time.monotonic() - started < 0.1
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert log == []
        assert app.runner.stats()["running"] + app.runner.stats()["pending"] == 2
        await app.runner.join(timeout=5)
    # A sequence: the decorator's task first, then the injected one.
    assert log == ["slow done", "injected"]


def test_testing_client_waits_for_tasks_inside_the_lifespan():
    log: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.1)
        log.append("done")

    @post("/x", background=BackgroundTask(slow))
    async def handler() -> None: ...

    app = App(routes=[handler])
    with TestClient(app) as client:
        assert app.runner.running
        assert client.post("/x").status_code == 201
        assert log == ["done"]
    assert not app.runner.running


def test_without_the_lifespan_tasks_run_inline_with_a_warning(backbeat_log):
    log: list[str] = []

    @post("/x", background=BackgroundTask(log.append, "ran"))
    async def handler() -> None: ...

    StarletteTestClient(App(routes=[handler])).post("/x")
    assert log == ["ran"]
    assert any("not running" in m for m in backbeat_log.messages(logging.WARNING))


def test_the_runner_starts_after_and_drains_before_the_apps_own_lifespan():
    events: list[str] = []

    async def task_using_the_pool() -> None:
        await asyncio.sleep(0.05)
        events.append("task done")

    @asynccontextmanager
    async def lifespan(app):
        events.append("pool opened")
        yield {"pool": "p"}
        events.append("pool closed")

    @post("/x", background=BackgroundTask(task_using_the_pool))
    async def handler() -> None: ...

    app = App(routes=[handler], lifespan=lifespan)
    with StarletteTestClient(app) as client:
        assert app.runner.running
        client.post("/x")
        events.append("request answered")
    assert events == ["pool opened", "request answered", "task done", "pool closed"]


def test_status_route_and_the_202_pattern(monkeypatch):
    import examples.accepted as accepted

    with TestClient(accepted.app) as client:
        client.runner = None  # look at the status while the task is still running
        response = client.post("/files", json={"name": "a.csv", "rows": 1})
        assert response.status_code == 202
        task_id = response.json()["task"]
        assert response.headers["location"] == f"/tasks/{task_id}"
        status = client.get(f"/tasks/{task_id}").json()
        assert status["id"] == task_id
        assert status["name"] == "files.process"
        assert status["state"] in ("pending", "running")
        assert status["created_at"].endswith("+00:00")
        client.portal.call(accepted.runner.join, 5)
        done = client.get(f"/tasks/{task_id}").json()
        assert (done["state"], done["attempts"], done["error"]) == ("succeeded", 1, None)
        missing = client.get("/tasks/01NOSUCHTASK0000000000000")
        assert (missing.status_code, missing.json()["detail"]) == (
            404,
            "no task with id 01NOSUCHTASK0000000000000",
        )


def test_status_route_needs_a_task_id_parameter():
    with pytest.raises(ValueError, match="task_id"):
        Runner().status_route("/jobs/{id}")


def test_eager_runner_reraises_task_errors_in_the_test():
    async def broken() -> None:
        raise LookupError("bug in the task")

    @post("/x", background=BackgroundTask(broken))
    async def handler() -> None: ...

    app = App(routes=[handler], runner=Runner(eager=True))
    with pytest.raises(LookupError, match="bug in the task"), StarletteTestClient(app) as client:
        client.post("/x")


def test_status_of_injected_and_returned_tasks():
    @get("/start")
    async def start(tasks: BackgroundTasks) -> JSONResponse:
        injected = tasks.add_task(asyncio.sleep, 0)
        own = BackgroundTask(asyncio.sleep, 0)
        return JSONResponse({"ids": [injected.id, own.id]}, background=own)

    app = App(routes=[start])
    with TestClient(app) as client:
        ids = client.get("/start").json()["ids"]
        assert [app.runner.get(i).state for i in ids] == ["succeeded", "succeeded"]
