"""backbeat.litestar: the plugin, a tiny Litestar app per test. What Litestar's own tests of
background tasks check (a response's task runs after it, in order, a group concurrently)
holds; what differs, on purpose: the decorator's task also runs when the handler returns a
Response with its own, and a failing task stops no other.

Handlers declare their parameters as Litestar 3 will require (``NamedDependency``,
``FromQuery``): a Litestar deprecation warning fails these tests."""

from __future__ import annotations

import logging
import signal
from typing import Any

import httpx
import pytest
from litestar import Litestar, Response, Router, get, post
from litestar import background_tasks as litestar_tasks
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, LitestarDeprecationWarning
from litestar.params import FromQuery

from backbeat import Runner, task
from backbeat.litestar import BackbeatPlugin, BackgroundTask, BackgroundTasks
from backbeat.testing import TestClient
from tests.apps import durable_tasks
from tests.serving import uvicorn
from tests.test_workers import wait_until


def test_the_decorators_task_runs_then_the_responses():
    ran: list[str] = []

    @get("/", background=BackgroundTask(ran.append, "decorator"))
    async def handler() -> Response[dict[str, bool]]:
        return Response({"ok": True}, background=BackgroundTask(ran.append, "response"))

    with TestClient(Litestar([handler], plugins=[BackbeatPlugin()])) as client:
        assert client.get("/").json() == {"ok": True}
    assert ran == ["decorator", "response"]


def test_a_handler_under_a_router_keeps_its_task():
    """A Router deep-copies its handlers, and with them their backbeat tasks (whose
    contextvars Context cannot be deep-copied by itself)."""
    ran: list[str] = []

    @get("/", background=BackgroundTasks([BackgroundTask(ran.append, "decorator")]))
    async def handler() -> Response[dict[str, bool]]:
        return Response({"ok": True}, background=BackgroundTask(ran.append, "response"))

    app = Litestar([Router("/api", route_handlers=[handler])], plugins=[BackbeatPlugin()])
    with TestClient(app) as client:
        assert client.get("/api").json() == {"ok": True}
    assert ran == ["decorator", "response"]


def test_the_apps_own_after_request_hook_still_runs():
    ran: list[str] = []

    def stamp(response: Response[Any]) -> Response[Any]:
        response.headers["x-stamped"] = "yes"
        return response

    @get("/", background=BackgroundTask(ran.append, "decorator"))
    async def handler() -> Response[dict[str, bool]]:
        return Response({"ok": True}, background=BackgroundTask(ran.append, "response"))

    app = Litestar([handler], plugins=[BackbeatPlugin()], after_request=stamp)
    with TestClient(app) as client:
        assert client.get("/").headers["x-stamped"] == "yes"
    assert ran == ["decorator", "response"]


def test_control_litestar_alone_drops_the_decorators_task():
    ran: list[str] = []

    @get("/", background=litestar_tasks.BackgroundTask(ran.append, "decorator"))
    async def handler() -> Response[dict[str, bool]]:
        return Response({}, background=litestar_tasks.BackgroundTask(ran.append, "response"))

    with TestClient(Litestar([handler])) as client:
        client.get("/")
    assert ran == ["response"]


def test_injected_tasks_run_in_order_isolated_after_the_response(backbeat_log):
    ran: list[str] = []

    def explode() -> None:
        raise RuntimeError("boom")

    @post("/", background=BackgroundTask(ran.append, "decorator"))
    async def handler(tasks: NamedDependency[BackgroundTasks]) -> dict[str, bool]:
        tasks.add_task(ran.append, "first")
        tasks.add_task(explode)
        tasks.add_task(ran.append, "third")
        return {"ok": True}

    runner = Runner()
    app = Litestar([handler], plugins=[BackbeatPlugin(runner)])
    with TestClient(app, raise_task_exceptions=False) as client:
        assert client.post("/").status_code == 201
        stats = runner.stats()
    # The collection runs in order; the decorator's task is a job of its own beside it.
    assert sorted(ran) == ["decorator", "first", "third"]
    assert ran.index("first") < ran.index("third")
    assert (stats["succeeded"], stats["failed"]) == (3, 1)
    assert any("boom" in line for line in backbeat_log.messages(logging.ERROR))


def test_no_injected_task_runs_when_the_handler_raises():
    ran: list[str] = []

    @post("/")
    async def handler(tasks: NamedDependency[BackgroundTasks]) -> None:
        tasks.add_task(ran.append, "never")
        raise HTTPException("taken", status_code=409)

    with TestClient(Litestar([handler], plugins=[BackbeatPlugin()])) as client:
        assert client.post("/").status_code == 409
    assert ran == []


def test_a_group_runs_concurrently_and_a_retry_policy_is_kept():
    attempts: list[int] = []

    @task(retries=2, backoff=0.01)
    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    @get("/")
    async def handler() -> Response[None]:
        group = BackgroundTasks([BackgroundTask(flaky)], as_group=True)
        return Response(None, background=group)

    with TestClient(Litestar([handler], plugins=[BackbeatPlugin()])) as client:
        client.get("/")
    assert len(attempts) == 3


def test_with_a_store_tasks_are_stored_before_the_response_or_refused(tmp_path):
    store = f"sqlite:///{tmp_path}/tasks.db"
    runner = Runner(store=store)
    runner.register(durable_tasks.record_sync)
    plugin = BackbeatPlugin(runner)

    @post("/good")
    async def good(
        label: FromQuery[str], tasks: NamedDependency[BackgroundTasks]
    ) -> dict[str, str]:
        return {"id": tasks.add_task(durable_tasks.record_sync, label).id}

    @post("/bad")
    async def bad(tasks: NamedDependency[BackgroundTasks]) -> None:
        tasks.add_task(durable_tasks.record_sync, "first")
        tasks.add_task(durable_tasks.record_sync, object())  # not JSON

    durable_tasks.calls.clear()
    app = Litestar([good, bad, plugin.status_router()], plugins=[plugin])
    with TestClient(app, raise_server_exceptions=False) as client:
        task_id = client.post("/good?label=kept").json()["id"]
        refused = client.post("/bad")
        status = client.get(f"/tasks/{task_id}").json()
        result = client.get(f"/tasks/{task_id}/result")
        missing = client.get("/tasks/nope")
        schema = client.get("/schema/openapi.json").json()
    assert refused.status_code == 500
    assert durable_tasks.calls == [("kept", "sync")]
    assert status["state"] == "succeeded" and "name" not in status
    assert result.status_code == 200 and missing.status_code == 404
    assert "/tasks/{task_id}" in schema["paths"]


def test_the_status_router_guards_with_auth():
    plugin = BackbeatPlugin()

    @post("/")
    async def handler(tasks: NamedDependency[BackgroundTasks]) -> dict[str, str]:
        return {"id": tasks.add_task(print, "hi").id}

    def only_with_key(request: Any) -> bool:
        return bool(request.headers.get("x-key") == "k")

    app = Litestar([handler, plugin.status_router(auth=only_with_key)], plugins=[plugin])
    with TestClient(app) as client:
        task_id = client.post("/").json()["id"]
        assert client.get(f"/tasks/{task_id}").status_code == 403
        assert client.get(f"/tasks/{task_id}", headers={"x-key": "k"}).status_code == 200


@pytest.mark.process
def test_the_example_served_by_uvicorn_survives_a_kill_9(tmp_path):
    env = {"BACKBEAT_STORE": f"sqlite:///{tmp_path}/tasks.db", "REMIND_AFTER": "3"}
    emails = [f"user{n}@example.com" for n in range(5)]
    with uvicorn("examples.litestar_app:app", tmp_path, env=env, name="first") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for email in emails:
                assert client.post("/signup", json={"email": email}).status_code == 202
            client.post("/unsubscribe", json={"email": "gone@example.com"})
            wait_until(lambda: server.log().count("welcome sent") == 5, 10, "welcomes", server.log)
            wait_until(lambda: "audit: unsubscribed" in server.log(), 5, "audit", server.log)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    first = server.log()
    assert first.count("audit: a signup") == 5
    assert "audit: an unsubscription" in first and "audit: unsubscribed gone@" in first
    assert "reminder sent" not in first
    with uvicorn("examples.litestar_app:app", tmp_path, env=env, name="second") as restarted:
        wait_until(
            lambda: restarted.log().count("reminder sent to") == 5, 15, "reminders", restarted.log
        )
    assert "welcome sent" not in restarted.log()


def test_the_bare_annotation_still_works_in_litestar_2_with_its_warning():
    ran: list[str] = []

    with pytest.warns(LitestarDeprecationWarning, match="Inferred dependency field 'tasks'"):

        @post("/")
        async def handler(tasks: BackgroundTasks) -> None:
            tasks.add_task(ran.append, "ran")

        app = Litestar([handler], plugins=[BackbeatPlugin()])
    with TestClient(app) as client:
        assert client.post("/").status_code == 201
    assert ran == ["ran"]


pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")
