"""backbeat.lilya: a Lilya app under BackbeatMiddleware with backbeat's task classes (typed as
Lilya's) and the status routes as Lilya paths (backbeat's own route objects crash Lilya's
router at request time). Lilya's own background-task tests check that a response's task
runs after it and that `Tasks` run in order or as a group: those hold here, under the runner."""

from __future__ import annotations

import logging
import signal

import httpx
import pytest
from lilya.apps import Lilya
from lilya.requests import Request
from lilya.responses import JSONResponse
from lilya.routing import Path

from backbeat import BackbeatMiddleware, Runner
from backbeat.lilya import BackgroundTask, BackgroundTasks, status_paths
from backbeat.testing import TestClient
from tests.serving import uvicorn
from tests.test_workers import wait_until


def make(handler, runner: Runner | None = None, **status) -> BackbeatMiddleware:
    runner = runner or Runner()
    app = Lilya(
        routes=[Path("/", handler, methods=["GET", "POST"]), *status_paths(runner, **status)]
    )
    return BackbeatMiddleware(app, runner=runner)


def test_a_responses_tasks_run_in_order_isolated_under_the_runner(backbeat_log):
    ran: list[str] = []

    def explode() -> None:
        raise RuntimeError("boom")

    async def handler(request: Request) -> JSONResponse:
        tasks = BackgroundTasks()
        tasks.add_task(ran.append, "first")
        tasks.add_task(explode)
        tasks.add_task(ran.append, "third")
        return JSONResponse({"ok": True}, background=tasks)

    app = make(handler)
    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.get("/").json() == {"ok": True}
        stats = app.runner.stats()
    assert ran == ["first", "third"]
    assert (stats["succeeded"], stats["failed"]) == (2, 1)
    assert any("boom" in line for line in backbeat_log.messages(logging.ERROR))


def test_a_group_runs_concurrently():
    ran: list[str] = []

    async def handler(request: Request) -> JSONResponse:
        group = BackgroundTasks(
            [BackgroundTask(ran.append, "a"), BackgroundTask(ran.append, "b")], as_group=True
        )
        return JSONResponse({}, background=group)

    with TestClient(make(handler)) as client:
        client.get("/")
    assert sorted(ran) == ["a", "b"]


def test_the_status_paths_answer_through_lilyas_router(tmp_path):
    async def handler(request: Request) -> JSONResponse:
        job = BackgroundTask(double, 21)
        return JSONResponse({"id": job.id}, background=job)

    def allowed(request: Request) -> bool:
        return request.headers.get("x-key") == "k"

    runner = Runner(store=f"sqlite:///{tmp_path}/t.db")
    runner.register(double)
    with TestClient(make(handler, runner, auth=allowed)) as client:
        task_id = client.get("/").json()["id"]
        key = {"x-key": "k"}
        assert client.get(f"/tasks/{task_id}").status_code == 403
        assert client.get(f"/tasks/{task_id}", headers=key).json()["state"] == "succeeded"
        assert client.get(f"/tasks/{task_id}/result", headers=key).json() == 42
        assert client.get("/tasks/nope", headers=key).status_code == 404


def double(number: int) -> int:
    return 2 * number


@pytest.mark.process
def test_the_example_served_by_uvicorn_survives_a_kill_9(tmp_path):
    env = {"BACKBEAT_STORE": f"sqlite:///{tmp_path}/tasks.db", "REMIND_AFTER": "3"}
    emails = [f"user{n}@example.com" for n in range(5)]
    with uvicorn("examples.lilya_app:app", tmp_path, env=env, name="first") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            ids = [client.post("/signup", json={"email": e}).json()["task"] for e in emails]
            wait_until(lambda: server.log().count("welcome sent") == 5, 10, "welcomes", server.log)
            assert client.get(f"/tasks/{ids[0]}").json()["state"] == "succeeded"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    assert "reminder sent" not in server.log()
    with uvicorn("examples.lilya_app:app", tmp_path, env=env, name="second") as restarted:
        wait_until(
            lambda: restarted.log().count("reminder sent to") == 5, 15, "reminders", restarted.log
        )
    assert "welcome sent" not in restarted.log()
