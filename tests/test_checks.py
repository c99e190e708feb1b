"""Tasks a store could not run, found when the app starts (and by `backbeat check`), not
request by request."""

import os
import subprocess
import sys

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from backbeat import App, BackbeatMiddleware, BackgroundTask, BackgroundTasks, Runner, post
from backbeat.checks import UnrunnableTasks
from backbeat.testing import TestClient
from tests.apps import durable_tasks, mail_helpers
from tests.apps.mail_helpers import send_mail
from tests.serving import ROOT, background_process, uvicorn


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/tasks.db"


@pytest.fixture(autouse=True)
def no_mail_yet():
    mail_helpers.sent.clear()


def closure_task() -> BackgroundTask:
    def remind() -> None: ...

    return BackgroundTask(remind)


def test_a_mounted_routes_task_from_an_undeclared_module_runs_with_a_store(store):
    @post("/welcome", background=BackgroundTask(send_mail, "ann@example.com"))
    async def welcome() -> None: ...

    app = App(routes=[Mount("/api", routes=[welcome])], runner=Runner(store=store))
    with TestClient(app) as client:
        assert client.post("/api/welcome").status_code == 201
    assert mail_helpers.sent == ["ann@example.com"]


def test_a_mounted_routes_closure_fails_start_up_naming_the_route_and_the_fix(store):
    @post("/remind", background=closure_task())
    async def remind() -> None: ...

    @post("/later", background=BackgroundTasks([BackgroundTask(lambda: None)]))
    async def later() -> None: ...

    app = App(routes=[Mount("/api", routes=[remind, later])], runner=Runner(store=store))
    with pytest.raises(UnrunnableTasks) as refused, TestClient(app):
        pass
    lines = str(refused.value).splitlines()
    assert len(refused.value.problems) == 2
    assert any(
        "POST /api/remind" in line
        and "closure_task.<locals>.remind" in line
        and "define it at module level" in line
        for line in lines
    )
    assert any("POST /api/later" in line and "cannot be a lambda" in line for line in lines)
    assert not app.runner.running


def test_a_top_level_closure_fails_start_up_with_the_others_not_the_import(store):
    @post("/remind", background=closure_task())
    async def remind() -> None: ...

    @post("/bad-args", background=BackgroundTask(durable_tasks.record_sync, object()))
    async def bad_args() -> None: ...

    app = App(routes=[remind, bad_args], runner=Runner(store=store))  # no error yet
    with pytest.raises(UnrunnableTasks) as refused, TestClient(app):
        pass
    assert [problem.route for problem in refused.value.problems] == [
        "POST /remind",
        "POST /bad-args",
    ]
    assert "cannot be stored as JSON" in str(refused.value)


def test_without_a_store_closures_are_fine(store):
    ran = []

    def remind() -> None:
        ran.append("remind")

    @post("/remind", background=BackgroundTask(remind))
    async def remind_route() -> None: ...

    with TestClient(App(routes=[Mount("/api", routes=[remind_route])])) as client:
        assert client.post("/api/remind").status_code == 201
    assert ran == ["remind"]


def test_the_middleware_checks_the_backbeat_routes_of_the_app_it_wraps(store):
    @post("/welcome", background=BackgroundTask(send_mail, "bob@example.com"))
    async def welcome() -> None: ...

    @post("/remind", background=closure_task())
    async def remind() -> None: ...

    good = BackbeatMiddleware(
        Starlette(routes=[Mount("/v1", routes=[welcome])]), runner=Runner(store=store)
    )
    with TestClient(good) as client:
        assert client.post("/v1/welcome").status_code == 201
    assert mail_helpers.sent == ["bob@example.com"]

    bad = BackbeatMiddleware(
        Starlette(routes=[Mount("/v1", routes=[welcome, remind])]), runner=Runner(store=store)
    )
    with pytest.raises(UnrunnableTasks, match="POST /v1/remind"), TestClient(bad):
        pass


def test_an_app_mounted_in_another_is_checked_with_its_own_runner(store):
    @post("/remind", background=closure_task())
    async def remind() -> None: ...

    inner = App(routes=[remind])  # in memory: its closure is fine
    outer = App(routes=[Mount("/inner", app=inner)], runner=Runner(store=store))
    with TestClient(outer) as client:
        assert client.post("/inner/remind").status_code == 201


def run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("target", ["tests.apps.mounted_app:app", "tests.apps.mounted_app:wrapped"])
def test_uvicorn_refuses_to_start_with_one_clear_line_per_problem(store, target):
    done = run(
        "uvicorn",
        target,
        "--port",
        "0",
        BACKBEAT_TEST_STORE=store,
        BACKBEAT_TEST_PROBLEMS="1",
    )
    log = done.stderr
    assert done.returncode != 0
    assert "POST /api/remind" in log and "POST /api/later" in log
    assert "Application startup failed" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("target", ["tests.apps.mounted_app:app", "tests.apps.mounted_app:wrapped"])
def test_a_worker_runs_the_mounted_task_of_an_app_that_only_writes(tmp_path, store, target):
    app_env = {"BACKBEAT_TEST_STORE": store, "BACKBEAT_TEST_EXECUTE": "0"}
    worker = [sys.executable, "-m", "backbeat", "worker", target]
    with (
        uvicorn(target, tmp_path, env=app_env) as server,
        background_process(worker, tmp_path, env={"BACKBEAT_TEST_STORE": store}, name="worker"),
    ):
        assert httpx.post(f"{server.url}/api/welcome", timeout=10).status_code == 201
        server.wait_for_mark("mail:ann@example.com", timeout=15)
    assert "unknown task" not in (tmp_path / "worker.log").read_text()


def test_backbeat_check_lists_what_a_store_could_not_run(store):
    done = run(
        "backbeat",
        "check",
        "tests.apps.mounted_app:app",
        BACKBEAT_TEST_STORE=store,
        BACKBEAT_TEST_PROBLEMS="1",
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert "2 task(s)" in lines[0]
    assert lines[1].startswith("  POST /api/remind: task ") and "module level" in lines[1]
    assert lines[2].startswith("  POST /api/later: task ") and "lambda" in lines[2]
    assert done.stderr == ""


def test_backbeat_check_says_all_is_well_and_creates_no_store(tmp_path, store):
    done = run("backbeat", "check", "tests.apps.mounted_app:app", BACKBEAT_TEST_STORE=store)
    assert (done.returncode, done.stderr) == (0, "")
    assert "every task its routes declare can be run from its store" in done.stdout
    assert list(tmp_path.iterdir()) == []  # checking opens no store


def test_backbeat_check_of_an_app_without_a_store_says_so(tmp_path):
    done = run("backbeat", "check", "tests.apps.mounted_app:app", BACKBEAT_TEST_PROBLEMS="1")
    assert done.returncode == 0, done.stderr
    assert "no store" in done.stdout and "nothing to check" in done.stdout


@pytest.mark.parametrize("example", ["examples.register:app", "examples.fastapi_app:app"])
def test_backbeat_check_of_the_examples(tmp_path, example):
    done = run("backbeat", "check", example, BACKBEAT_STORE=f"sqlite:///{tmp_path}/tasks.db")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert "can be run from its store" in done.stdout


def test_backbeat_check_of_an_app_that_cannot_be_imported():
    done = run("backbeat", "check", "tests.apps.broken_app:app")
    assert done.returncode == 1
    assert done.stderr.startswith("backbeat check: error: importing 'tests.apps.broken_app'")


def test_a_litestar_handlers_task_from_an_undeclared_module_runs_with_a_store(store):
    from litestar import Litestar
    from litestar import post as litestar_post

    from backbeat.litestar import BackbeatPlugin
    from backbeat.litestar import BackgroundTask as LitestarTask

    @litestar_post("/welcome", background=LitestarTask(send_mail, "cy@example.com"))
    async def welcome() -> None: ...

    app = Litestar([welcome], plugins=[BackbeatPlugin(Runner(store=store))])
    with TestClient(app) as client:
        assert client.post("/welcome").status_code == 201
    assert mail_helpers.sent == ["cy@example.com"]


def test_a_litestar_handlers_closure_fails_start_up(store):
    from litestar import Litestar
    from litestar import post as litestar_post

    from backbeat.litestar import BackbeatPlugin

    @litestar_post("/v2/remind", background=closure_task())
    async def remind() -> None: ...

    app = Litestar([remind], plugins=[BackbeatPlugin(Runner(store=store))])
    with pytest.raises(BaseExceptionGroup) as raised, TestClient(app):
        pass
    [refused] = raised.value.exceptions  # Litestar's task group wraps it
    assert isinstance(refused, UnrunnableTasks)
    assert "POST /v2/remind: task " in str(refused)


def notify() -> None: ...


def notify_again() -> None: ...


notify_again.__qualname__ = notify_again.__name__ = "notify"  # found by the same name


def test_two_functions_under_one_name_fail_start_up_with_the_fix(store):
    @post("/a", background=BackgroundTask(notify))
    async def a() -> None: ...

    @post("/b", background=BackgroundTask(notify_again))
    async def b() -> None: ...

    app = App(routes=[Mount("/x", routes=[a, b])], runner=Runner(store=store))
    with pytest.raises(UnrunnableTasks) as refused, TestClient(app):
        pass
    [problem] = refused.value.problems
    assert problem.route == "POST /x/b"
    assert "two different functions are registered as task 'tests.test_checks:notify'" in str(
        problem
    )
    assert "give one another name with @task(name=...)" in problem.reason
