import asyncio
import logging
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient as StarletteTestClient

from backbeat import (
    App,
    BackgroundTask,
    BackgroundTasks,
    JSONResponse,
    Request,
    Runner,
    get,
    post,
    status_route,
    task,
)
from backbeat.status import TaskInfo, TaskState
from backbeat.testing import TestClient
from tests.apps import durable_tasks
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
        assert status["state"] in ("pending", "running")
        assert status["created_at"].endswith("+00:00")
        client.portal.call(accepted.runner.join, 5)
        done = client.get(f"/tasks/{task_id}").json()
        assert (done["state"], done["attempts"]) == ("succeeded", 1)
        missing = client.get("/tasks/01NOSUCHTASK0000000000000")
        assert (missing.status_code, missing.json()["detail"]) == (
            404,
            "no task with id 01NOSUCHTASK0000000000000",
        )


@task(name="tests.mail.send")
async def fail_to_send(address: str) -> None:
    raise RuntimeError(f"mailbox {address} unavailable")


def status_app(**options):
    @post("/send", status_code=202)
    async def send(tasks: BackgroundTasks) -> dict[str, str]:
        return {"task": tasks.add_task(fail_to_send, "victim@example.com").id}

    runner = Runner()
    return App(routes=[send, status_route(runner, **options)], runner=runner)


def test_status_route_hides_errors_and_names_unless_allowed():
    with TestClient(status_app(), raise_task_exceptions=False) as client:
        task_id = client.post("/send").json()["task"]
        shown = client.get(f"/tasks/{task_id}").json()
    assert shown["state"] == "failed"
    assert set(shown) == {"id", "state", "attempts", "created_at", "started_at", "finished_at"}
    assert "victim" not in str(shown)

    with TestClient(status_app(include_errors=True), raise_task_exceptions=False) as client:
        task_id = client.post("/send").json()["task"]
        shown = client.get(f"/tasks/{task_id}").json()
    assert shown["name"] == "tests.mail.send"
    assert shown["error"] == "RuntimeError: mailbox victim@example.com unavailable"


def test_status_route_auth_gives_403_or_the_callables_own_401():
    async def only_admins(request: Request) -> bool:
        if "authorization" not in request.headers:
            raise HTTPException(401, "log in first")
        return request.headers["authorization"] == "Bearer admin"

    with TestClient(status_app(auth=only_admins), raise_task_exceptions=False) as client:
        task_id = client.post("/send").json()["task"]
        assert client.get(f"/tasks/{task_id}").status_code == 401
        denied = client.get(f"/tasks/{task_id}", headers={"authorization": "Bearer user"})
        assert denied.status_code == 403
        allowed = client.get(f"/tasks/{task_id}", headers={"authorization": "Bearer admin"})
        assert allowed.status_code == 200
        unknown = client.get("/tasks/01NOSUCH", headers={"authorization": "Bearer user"})
        assert unknown.status_code == 403  # no way to probe which ids exist
    with pytest.raises(TypeError, match="auth"):
        status_route(Runner(), auth="admin")


def test_status_route_needs_a_task_id_parameter():
    with pytest.raises(ValueError, match="task_id"):
        status_route(Runner(), "/jobs/{id}")


def test_status_route_reads_from_anything_with_aget_not_only_a_runner():
    created = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    class Archive:
        async def aget(self, task_id: str) -> TaskInfo | None:
            if task_id != "01ARCHIVED":
                return None
            return TaskInfo(
                task_id, "old.job", TaskState.SUCCEEDED, 1, None, created, created, created
            )

    app = App(routes=[status_route(Archive(), "/archive/{task_id}")], runner=False)
    with StarletteTestClient(app) as client:
        shown = client.get("/archive/01ARCHIVED").json()
        missing = client.get("/archive/01OTHER")
    assert shown["state"] == "succeeded"
    assert shown["finished_at"] == created.isoformat()
    assert missing.status_code == 404


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


def test_a_task_that_fails_for_good_fails_the_test_by_default():
    attempts = []

    async def broken() -> None:
        attempts.append(1)
        raise LookupError("bug in the task")

    @post("/x")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(broken).using(retries=1, backoff=0.001)

    app = App(routes=[handler])
    with TestClient(app) as client:
        with pytest.raises(LookupError, match="bug in the task") as raised:
            client.post("/x")
        assert len(attempts) == 2  # retried first: only the final failure counts
        assert "raised by background task" in "".join(raised.value.__notes__)
        assert client.post("/y").status_code == 404  # reported once, not again
    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.post("/x").status_code == 201
        assert [exc.args for _, exc in client.task_failures] == [("bug in the task",)]


def test_the_client_does_not_wait_for_work_left_to_workers(tmp_path):
    @post("/x")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(durable_tasks.sleep_and_mark, 0, "never here")

    runner = durable_tasks.runner(f"sqlite:///{tmp_path}/tasks.db", execute=False)
    app = App(routes=[handler], runner=runner)
    started = time.monotonic()
    with TestClient(app) as client:
        assert client.post("/x").status_code == 201
    assert time.monotonic() - started < 5  # it waited 30 s, then raised TimeoutError
    assert runner.stats()["pending"] == 1
