"""backbeat.esmerald under an unchanged Esmerald app (Esmerald 3.9.4 + Lilya 0.20, in their
own venv: `tests/frameworks/run.sh`, part of `make test`; skipped where Esmerald is missing).

What Esmerald's own background-task tests check holds (the decorator's task runs after a
dict/model return, `BackgroundTasks` in order, a response's own task runs); what differs,
on purpose: the decorator's task also runs when the handler returns a response (first),
every task runs under backbeat's runner, and a failing task stops no other."""

from __future__ import annotations

import logging
import signal
import sqlite3
import time

import httpx
import pytest

esmerald = pytest.importorskip("esmerald")

from esmerald import Esmerald, Gateway, JSONResponse, get, post  # noqa: E402
from esmerald.background import BackgroundTask, BackgroundTasks  # noqa: E402
from esmerald.exceptions import HTTPException  # noqa: E402

from backbeat import Runner  # noqa: E402
from backbeat.esmerald import install, status_gateways  # noqa: E402
from backbeat.testing import TestClient  # noqa: E402
from tests.serving import uvicorn  # noqa: E402
from tests.test_workers import wait_until  # noqa: E402


def served(*handlers, runner=None):
    runner = runner or Runner()
    app = Esmerald(routes=[*(Gateway(handler=h) for h in handlers), *status_gateways(runner)])
    install(app, runner)
    return app, runner


def test_the_decorators_task_runs_also_when_the_handler_returns_a_response():
    ran: list[str] = []

    @post("/register", background=BackgroundTask(ran.append, "decorator"))
    async def create_user() -> JSONResponse:
        return JSONResponse({"message": "Created"}, background=BackgroundTask(ran.append, "own"))

    app, _ = served(create_user)
    with TestClient(app) as client:
        assert client.post("/register").json() == {"message": "Created"}
    assert ran == ["decorator", "own"]


def test_control_esmerald_alone_keeps_only_one_of_the_two():
    ran: list[str] = []

    @post("/register", background=BackgroundTask(ran.append, "decorator"))
    async def create_user() -> JSONResponse:
        return JSONResponse({"message": "Created"}, background=BackgroundTask(ran.append, "own"))

    with TestClient(Esmerald(routes=[Gateway(handler=create_user)])) as client:
        client.post("/register")
    # Which one depends on how Esmerald reads the return annotation; never both.
    assert ran in (["decorator"], ["own"])


def test_a_dict_return_runs_the_decorators_tasks_in_order_under_the_runner():
    ran: list[str] = []

    @post(
        "/with-log",
        background=BackgroundTasks(
            tasks=[BackgroundTask(ran.append, "email"), BackgroundTask(ran.append, "file")]
        ),
    )
    async def create_user() -> dict[str, str]:
        return {"message": "Created"}

    app, runner = served(create_user)
    with TestClient(app) as client:
        assert client.post("/with-log").status_code == 201
        stats = runner.stats()
    assert ran == ["email", "file"]
    assert stats["succeeded"] == 2  # the runner ran them


def test_a_failing_task_stops_no_other(backbeat_log):
    ran: list[str] = []

    def explode() -> None:
        raise RuntimeError("boom")

    @get(
        "/",
        background=BackgroundTasks(
            tasks=[BackgroundTask(explode), BackgroundTask(ran.append, "after")]
        ),
    )
    async def handler() -> dict[str, bool]:
        return {"ok": True}

    app, _ = served(handler)
    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.get("/").status_code == 200
    assert ran == ["after"]
    assert any("boom" in line for line in backbeat_log.messages(logging.ERROR))


def test_no_task_runs_when_the_handler_raises():
    ran: list[str] = []

    @get("/", background=BackgroundTask(ran.append, "never"))
    async def handler() -> dict[str, bool]:
        raise HTTPException(status_code=409, detail="taken")

    app, _ = served(handler)
    with TestClient(app) as client:
        assert client.get("/").status_code == 409
    assert ran == []


def test_a_group_runs_concurrently():
    ran: list[str] = []

    @get(
        "/",
        background=BackgroundTasks(
            tasks=[BackgroundTask(ran.append, "a"), BackgroundTask(ran.append, "b")],
            as_group=True,
        ),
    )
    async def handler() -> dict[str, bool]:
        return {"ok": True}

    app, _ = served(handler)
    with TestClient(app) as client:
        client.get("/")
    assert sorted(ran) == ["a", "b"]


def note(line: str) -> None:
    """A plain function next to the handlers: a store finds it by name."""
    noted.append(line)


noted: list[str] = []


def test_with_a_store_the_tasks_are_stored_and_the_status_routes_answer(tmp_path):
    @post("/", background=BackgroundTask(note, "hello"))
    async def handler() -> JSONResponse:
        return JSONResponse({"ok": True}, background=BackgroundTask(note, "again"))

    @post("/bad", background=BackgroundTask(note, object()))  # not JSON
    async def bad() -> dict[str, bool]:
        return {"ok": True}

    noted.clear()
    app, runner = served(handler, bad, runner=Runner(store=f"sqlite:///{tmp_path}/t.db"))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/")
        assert client.post("/bad").status_code == 500  # refused before the response
        [*_, last] = runner.store is not None and __import__("asyncio").run(_ids(runner))
        assert client.get(f"/tasks/{last}").json()["state"] == "succeeded"
        assert client.get("/tasks/nope").status_code == 404
    assert noted == ["hello", "again"]


def outcomes_recorded(path) -> bool:
    """No task of the store is running or due: all that could run has its outcome written."""
    with sqlite3.connect(path) as conn:
        [(unsettled,)] = conn.execute(
            "SELECT count(*) FROM backbeat_tasks WHERE state IN ('held', 'running') "
            "OR (state = 'pending' AND due_at <= ?)",
            (time.time(),),
        ).fetchall()
    return unsettled == 0


async def _ids(runner):
    return [status.id for status in await runner.store.list_tasks()]


@pytest.mark.process
def test_the_example_served_by_uvicorn_survives_a_kill_9(tmp_path):
    env = {"BACKBEAT_STORE": f"sqlite:///{tmp_path}/tasks.db", "REMIND_AFTER": "3"}
    user = {"email": "ann@example.com", "password": "s3cret"}
    with uvicorn("examples.esmerald_app:app", tmp_path, env=env, name="first") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(3):
                assert client.post("/register", json=user).status_code == 201
            assert client.post("/register/with-log", json=user).status_code == 201
            assert client.post("/unsubscribe", json=user).status_code == 201
            wait_until(
                lambda: (
                    server.log().count("notification sent") == 5
                    and "wrote the log" in server.log()
                    and outcomes_recorded(tmp_path / "tasks.db")
                ),
                10,
                "tasks",
                server.log,
            )
        # Killed once every outcome is recorded: a task killed between its last line and
        # its outcome's record runs again (at least once), which is not what this checks.
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    first = server.log()
    assert "wrote the log for someone" in first  # the decorator's group ran, in order
    assert "notification sent: Unsubscribed" in first  # backbeat's class as the decorator's
    assert "reminder sent" not in first  # delayed: still in the store
    with uvicorn("examples.esmerald_app:app", tmp_path, env=env, name="second") as restarted:
        wait_until(
            lambda: restarted.log().count("reminder sent to") == 3, 15, "reminders", restarted.log
        )
    assert "notification sent" not in restarted.log()
