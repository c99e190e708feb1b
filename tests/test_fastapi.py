"""backbeat.fastapi: injected tasks, the lifespan, the status router; a tiny FastAPI app per
test. The first two tests check what FastAPI's own tutorial tests check for its
background tasks; the rest is what backbeat adds (and where it differs, on purpose)."""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse

from backbeat import App, BackgroundTask, Runner, get, task
from backbeat.fastapi import SupervisedBackgroundTasks, Tasks, install, lifespan, status_router
from backbeat.testing import TestClient
from tests.apps import durable_tasks
from tests.conftest import recording
from tests.serving import uvicorn
from tests.test_workers import wait_until


def write_line(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line + "\n")


def test_a_task_added_in_the_handler_runs_after_the_response(tmp_path):
    log = tmp_path / "log.txt"
    app = FastAPI()
    install(app)

    @app.post("/send-notification/{email}")
    async def send_notification(email: str, tasks: Tasks) -> dict[str, str]:
        tasks.add_task(write_line, str(log), f"notification for {email}: some notification")
        return {"message": "Notification sent in the background"}

    with TestClient(app) as client:
        response = client.post("/send-notification/foo@example.com")
    assert response.json() == {"message": "Notification sent in the background"}
    assert log.read_text() == "notification for foo@example.com: some notification\n"


def test_a_dependency_and_the_handler_share_one_collection_in_order(tmp_path):
    log = tmp_path / "log.txt"
    app = FastAPI()
    install(app)

    def get_query(tasks: Tasks, q: str | None = None) -> str | None:
        if q:
            tasks.add_task(write_line, str(log), f"found query: {q}")
        return q

    @app.post("/send-notification/{email}")
    async def send_notification(
        email: str, tasks: Tasks, q: str | None = Depends(get_query)
    ) -> dict[str, str]:
        tasks.add_task(write_line, str(log), f"message to {email}")
        return {"message": "Message sent"}

    with TestClient(app) as client:
        response = client.post("/send-notification/rick@example.com?q=some-query")
    assert response.json() == {"message": "Message sent"}
    assert log.read_text() == "found query: some-query\nmessage to rick@example.com\n"


def test_a_failing_task_stops_no_other_and_never_reaches_the_client(backbeat_log):
    ran: list[str] = []
    app = FastAPI()
    runner = install(app)

    def explode() -> None:
        raise RuntimeError("boom")

    @app.post("/")
    async def handler(tasks: Tasks) -> dict[str, bool]:
        tasks.add_task(explode)
        tasks.add_task(ran.append, "second")
        return {"ok": True}

    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.post("/").status_code == 200
        stats = runner.stats()
    assert ran == ["second"]
    assert any("boom" in line for line in backbeat_log.messages(logging.ERROR))
    assert (stats["succeeded"], stats["failed"]) == (1, 1)  # the runner counts them


def test_a_tasks_retry_policy_is_kept():
    attempts: list[int] = []

    @task(retries=2, backoff=0.01)
    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    app = FastAPI()
    install(app)

    @app.post("/")
    async def handler(tasks: Tasks) -> None:
        tasks.add_task(flaky)

    with TestClient(app) as client:
        client.post("/")
    assert len(attempts) == 3


def test_no_task_runs_when_the_handler_raises():
    ran: list[str] = []
    app = FastAPI()
    install(app)

    @app.post("/")
    async def handler(tasks: Tasks) -> None:
        tasks.add_task(ran.append, "should not run")
        raise HTTPException(409, "taken")

    with TestClient(app) as client:
        assert client.post("/").status_code == 409
    assert ran == []


def test_tasks_handed_to_the_response_as_well_run_once():
    ran: list[str] = []
    app = FastAPI()
    install(app)

    @app.post("/")
    async def handler(tasks: Tasks) -> JSONResponse:
        tasks.add_task(ran.append, "once")
        return JSONResponse({"ok": True}, background=tasks)

    with TestClient(app) as client:
        client.post("/")
        client.post("/")
    assert ran == ["once", "once"]


def test_without_install_the_injection_says_what_is_missing():
    app = FastAPI()

    @app.post("/")
    async def handler(tasks: Tasks) -> None:
        tasks.add_task(print, "never")

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"BackbeatMiddleware"):
        client.post("/")


def test_with_a_store_tasks_are_stored_before_the_response_or_refused(tmp_path, backbeat_log):
    store = f"sqlite:///{tmp_path}/tasks.db"
    app = FastAPI()
    runner = install(app, Runner(store=store))
    runner.register(durable_tasks.record_sync)
    app.include_router(status_router(runner), prefix="/tasks")

    @app.post("/good")
    async def good(label: str, tasks: Tasks) -> dict[str, str]:
        return {"id": tasks.add_task(durable_tasks.record_sync, label).id}

    @app.post("/bad")
    async def bad(tasks: Tasks) -> dict[str, str]:
        tasks.add_task(durable_tasks.record_sync, "first")
        tasks.add_task(durable_tasks.record_sync, object())  # not JSON
        return {"ok": "no"}

    durable_tasks.calls.clear()
    with TestClient(app, raise_server_exceptions=False) as client:
        task_id = client.post("/good?label=kept").json()["id"]
        refused = client.post("/bad")
        status = client.get(f"/tasks/{task_id}").json()
    assert refused.status_code == 500 and refused.json() == {"detail": "Internal Server Error"}
    assert durable_tasks.calls == [("kept", "sync")]  # nothing of the refused request ran
    assert status["state"] == "succeeded" and "name" not in status
    assert Runner(store=store).stats()["succeeded"] == 1


def test_the_status_router_shows_in_openapi_and_guards_with_auth(tmp_path):
    app = FastAPI()
    runner = install(app)
    app.include_router(
        status_router(runner, auth=lambda request: request.headers.get("x-key") == "k"),
        prefix="/tasks",
    )

    async def double(number: int) -> int:
        return 2 * number

    @app.post("/")
    async def handler(tasks: Tasks) -> dict[str, str]:
        return {"id": tasks.add_task(double, 21).id}

    with TestClient(app) as client:
        task_id = client.post("/").json()["id"]
        paths = client.get("/openapi.json").json()["paths"]
        assert client.get(f"/tasks/{task_id}").status_code == 403
        key = {"x-key": "k"}
        assert client.get(f"/tasks/{task_id}", headers=key).json()["state"] == "succeeded"
        assert client.get(f"/tasks/{task_id}/result", headers=key).json() == 42
        assert client.get("/tasks/nope", headers=key).status_code == 404
    assert {"/tasks/{task_id}", "/tasks/{task_id}/result"} <= set(paths)
    assert paths["/tasks/{task_id}"]["get"]["tags"] == ["tasks"]


def test_a_backbeat_app_mounted_under_fastapi_gets_its_runner_started():
    ran: list[str] = []

    @get("/go", background=BackgroundTask(ran.append, "mounted"))
    async def go() -> dict[str, bool]:
        return {"ok": True}

    inner = App(routes=[go])
    app = FastAPI()
    install(app)
    app.mount("/inner", inner)
    with TestClient(app) as client:
        assert client.get("/inner/go").status_code == 200
        assert inner.runner is not None and inner.runner.running
        inner.runner.submit(BackgroundTask(ran.append, "submitted"))
    assert inner.runner is not None and not inner.runner.running
    assert sorted(ran) == ["mounted", "submitted"]


def test_the_lifespan_helper_runs_the_runner_inside_the_apps_own():
    seen: list[str] = []
    runner = Runner()

    @asynccontextmanager
    async def mine(app: FastAPI):
        seen.append(f"up, runner running: {runner.running}")
        yield {"db": "connected"}
        seen.append(f"down, runner running: {runner.running}")

    app = FastAPI(lifespan=lifespan(runner, mine))

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return {"running": runner.running}

    with TestClient(app, runner=runner) as client:
        assert client.get("/").json() == {"running": True}
    assert seen == ["up, runner running: False", "down, runner running: False"]


def test_the_worker_command_finds_the_runner_install_made(tmp_path):
    app = FastAPI()
    runner = install(app, Runner(store=f"sqlite:///{tmp_path}/t.db"))
    from backbeat.testing import find_runner

    assert find_runner(app) is runner


def test_logging_names_the_request_when_storing_fails(tmp_path):
    app = FastAPI()
    install(app, Runner(store=f"sqlite:///{tmp_path}/t.db")).register(durable_tasks.record_sync)

    @app.post("/bad")
    async def bad(tasks: Tasks) -> None:
        tasks.add_task(durable_tasks.record_sync, print)  # a function: not JSON

    with (
        recording("backbeat") as log,
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        assert client.post("/bad").status_code == 500
    assert "POST /bad" in " ".join(log.messages(logging.ERROR))


@pytest.mark.process
def test_the_example_served_by_uvicorn_survives_a_kill_9(tmp_path):
    """examples/fastapi_app.py under a real uvicorn: injected (backbeat's and FastAPI's own),
    dependency and response tasks run; reminders accepted before a kill -9 run after the
    restart."""
    env = {"BACKBEAT_STORE": f"sqlite:///{tmp_path}/tasks.db", "REMIND_AFTER": "3"}
    emails = [f"user{n}@example.com" for n in range(10)]
    with uvicorn("examples.fastapi_app:app", tmp_path, env=env, name="first") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            ids = [
                client.post("/signup?source=ads", json={"email": e}).json()["task"] for e in emails
            ]
            client.post("/unsubscribe", json={"email": "gone@example.com"})
            client.post("/feedback", json={"email": "fan@example.com"})
            wait_until(
                lambda: server.log().count("welcome sent to") == 10, 10, "welcomes", server.log
            )
            status = client.get(f"/tasks/{ids[0]}").json()
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    first = server.log()
    assert status["state"] == "succeeded"
    assert first.count("audit: signup from ads") == 10
    assert "audit: unsubscribed gone@example.com" in first
    assert "audit: feedback from fan@example.com" in first  # FastAPI's own parameter
    assert "reminder sent" not in first  # still waiting in the store when the server died
    with uvicorn("examples.fastapi_app:app", tmp_path, env=env, name="second") as restarted:
        wait_until(
            lambda: restarted.log().count("reminder sent to") == 10,
            15,
            "the reminders after the restart",
            restarted.log,
        )
    second = restarted.log()
    assert all(f"reminder sent to {e}" in second for e in emails)
    assert "welcome sent to" not in second  # nothing ran twice


def test_a_task_fastapi_drops_is_cancelled_and_logged_not_lost_silently(tmp_path, backbeat_log):
    store = f"sqlite:///{tmp_path}/tasks.db"
    app = FastAPI()
    install(app, Runner(store=store)).register(durable_tasks.record_sync)

    @app.post("/")
    async def handler(response: Response) -> dict[str, str]:
        job = BackgroundTask(durable_tasks.record_sync, "dropped")
        response.background = job  # FastAPI copies headers and status only
        return {"id": job.id}

    durable_tasks.calls.clear()
    with TestClient(app) as client:
        task_id = client.post("/").json()["id"]
    assert durable_tasks.calls == []
    assert Runner(store=store).get(task_id).state.value == "cancelled"
    assert any(
        "never handed over" in line and "POST /" in line
        for line in backbeat_log.messages(logging.WARNING)
    )


# FastAPI's own `BackgroundTasks` parameter, in an app `install` wired to backbeat.


def test_fastapis_own_parameter_runs_its_tasks_in_order_after_the_response(tmp_path):
    log = tmp_path / "log.txt"
    app = FastAPI()
    runner = install(app)

    def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
        if q:
            background_tasks.add_task(write_line, str(log), f"found query: {q}")
        return q

    @app.post("/send-notification/{email}")
    async def send_notification(
        email: str, background_tasks: BackgroundTasks, q: str | None = Depends(get_query)
    ) -> dict[str, str]:
        assert isinstance(background_tasks, SupervisedBackgroundTasks)
        background_tasks.add_task(write_line, str(log), f"message to {email}")
        assert log.exists() is False  # not run inline, in the handler or before the response
        return {"message": "Message sent"}

    with TestClient(app) as client:
        response = client.post("/send-notification/rick@example.com?q=some-query")
        stats = runner.stats()
    assert response.json() == {"message": "Message sent"}
    assert log.read_text() == "found query: some-query\nmessage to rick@example.com\n"
    assert stats["succeeded"] == 2  # the runner ran them


def test_fastapis_own_parameter_isolates_retries_and_drops_on_raise(backbeat_log):
    ran: list[str] = []
    attempts: list[int] = []

    @task(retries=2, backoff=0.01)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    def explode() -> None:
        raise RuntimeError("boom")

    app = FastAPI()
    runner = install(app)

    @app.post("/")
    def handler(background_tasks: BackgroundTasks) -> dict[str, bool]:  # a sync handler
        background_tasks.add_task(explode)
        background_tasks.add_task(flaky)
        background_tasks.add_task(ran.append, "after the failure")
        return {"ok": True}

    @app.post("/raises")
    async def raises(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(ran.append, "should not run")
        raise HTTPException(409, "taken")

    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.post("/").status_code == 200
        assert client.post("/raises").status_code == 409
        stats = runner.stats()
    assert ran == ["after the failure"]
    assert len(attempts) == 3
    assert (stats["succeeded"], stats["failed"]) == (2, 1)
    assert any("boom" in line for line in backbeat_log.messages(logging.ERROR))


def test_fastapis_own_parameter_is_stored_before_the_response_or_refused(tmp_path):
    store = f"sqlite:///{tmp_path}/tasks.db"
    app = FastAPI()
    install(app, Runner(store=store)).register(durable_tasks.record_sync)

    @app.post("/good")
    async def good(label: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(durable_tasks.record_sync, label)
        return {"ok": "yes"}

    @app.post("/bad")
    async def bad(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(durable_tasks.record_sync, "first")
        background_tasks.add_task(durable_tasks.record_sync, object())  # not JSON
        return {"ok": "no"}

    durable_tasks.calls.clear()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/good?label=kept").status_code == 200
        refused = client.post("/bad")
    assert refused.status_code == 500
    assert durable_tasks.calls == [("kept", "sync")]
    assert Runner(store=store).stats()["succeeded"] == 1


def test_an_app_not_installed_keeps_fastapis_behaviour():
    install(FastAPI())  # another app of the process is wired to backbeat
    ran: list[str] = []
    app = FastAPI()

    @app.post("/")
    async def handler(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(ran.append, "inline")

    with TestClient(app) as client:
        client.post("/")
    assert ran == ["inline"]


@pytest.mark.process
@pytest.mark.postgres
def test_the_postgres_example_enqueues_in_the_orders_transaction(tmp_path, postgres_server):
    """examples/fastapi_postgres.py under a real uvicorn: an order's receipt is enqueued in
    the order's SQLAlchemy transaction; a refused order rolls back with its receipt."""
    from tests.postgres_server import forget, fresh_schema_url

    url = fresh_schema_url(postgres_server)
    schema = url.rpartition("schema=")[2]
    env = {"DATABASE_URL": postgres_server, "APP_SCHEMA": schema, "BACKBEAT_SCHEMA": schema}
    try:
        with (
            uvicorn("examples.fastapi_postgres:app", tmp_path, env=env) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            made = client.post("/orders", params={"email": "ann@example.com"})
            refused = client.post("/orders", params={"email": "bob@example.com", "refuse": 1})
            wait_until(lambda: "receipt for" in server.log(), 10, "the receipt", server.log)
            listed = client.get("/orders").json()
        assert made.status_code == 201 and refused.status_code == 409
        assert listed == [made.json()["order"]]
        assert f"receipt for {made.json()['order']} sent to ann@example.com" in server.log()
        assert server.log().count("receipt for") == 1
        store = Runner(store=url)
        assert store.get(made.json()["task"]).state.value == "succeeded"
        assert sum(store.stats().values()) == 1  # the refused order's receipt never existed
    finally:
        forget(url)
