"""The runner with a SQLite store, in one process (real files)."""

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.testclient import TestClient as StarletteTestClient

from backbeat import (
    App,
    BackgroundTask,
    BackgroundTasks,
    JSONResponse,
    Runner,
    post,
    status_route,
)
from backbeat.checks import UnrunnableTasks
from backbeat.ids import new_id
from backbeat.stores import NewTask
from backbeat.testing import TestClient
from tests.apps import durable_tasks
from tests.apps.durable_tasks import flaky, record, record_sync, request_id, sleep_and_mark
from tests.helpers import take_the_store_away

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def clear_calls():
    durable_tasks.calls.clear()


async def test_a_task_is_written_then_run_with_its_arguments_decoded(db):
    ident = uuid.uuid4()
    async with durable_tasks.runner(db) as runner:
        task_id = await runner.asubmit(BackgroundTask(record, "a", Decimal("1.5"), ident=ident))
        await runner.join(timeout=5)
        info = runner.get(task_id)
    assert durable_tasks.calls == [("a", (Decimal("1.5"), ident, "-"))]
    assert (info.state, info.attempts, info.name) == (
        "succeeded",
        1,
        "tests.apps.durable_tasks:record",
    )
    assert runner.stats()["succeeded"] == 1


async def test_another_runner_sees_the_state_without_being_started(shared_db):
    db = shared_db
    async with durable_tasks.runner(db) as runner:
        task_id = await runner.asubmit(BackgroundTask(record_sync, "x"))
        await runner.join(timeout=5)
    onlooker = durable_tasks.runner(db)  # never started: a CLI, a status page
    assert onlooker.get(task_id).state == "succeeded"
    assert (await onlooker.aget(task_id)).attempts == 1


async def test_retries_then_a_dead_letter_with_error_and_traceback(db, backbeat_log):
    async with durable_tasks.runner(db) as runner:
        task_id = await runner.asubmit(BackgroundTask(flaky, "f"))
        await runner.join(timeout=5)
        info = runner.get(task_id)
        stored = await runner.store.get(task_id)
    assert durable_tasks.calls == [("f", "attempt"), ("f", "attempt")]
    assert (info.state, info.attempts, info.error) == ("failed", 2, "ConnectionError: f failed")
    assert "Traceback (most recent call last)" in stored.traceback
    assert any("failed after 2 attempts" in m for m in backbeat_log.messages())


async def test_an_unknown_task_name_is_dead_lettered_and_the_worker_goes_on(db, backbeat_log):
    async with durable_tasks.runner(db) as runner:
        now = time.time()
        stranger = NewTask(new_id(), "os:system", '{"args": ["rm -rf /"], "kwargs": {}}', now, now)
        await runner.store.enqueue([stranger])
        good = await runner.asubmit(BackgroundTask(record_sync, "after"))
        await runner.join(timeout=5)
        bad = runner.get(stranger.id)
        assert (bad.state, bad.attempts) == ("failed", 1)
        assert bad.error.startswith("unknown task 'os:system'")
        assert runner.get(good).state == "succeeded"
    assert durable_tasks.calls == [("after", "sync")]
    assert any("cannot run: unknown task" in m for m in backbeat_log.messages())


async def test_a_stored_document_that_does_not_fit_is_dead_lettered(db):
    async with durable_tasks.runner(db) as runner:
        runner.register(record_sync)
        now = time.time()
        row = NewTask(new_id(), "tests.apps.durable_tasks:record_sync", "{broken", now, now)
        await runner.store.enqueue([row])
        await runner.join(timeout=5)
        assert "not a valid document" in runner.get(row.id).error


async def test_what_cannot_be_stored_is_a_type_error_and_nothing_is_stored(db):
    def local() -> None: ...

    async with durable_tasks.runner(db) as runner:
        with pytest.raises(TypeError, match=r"argument 'ident' of task .* cannot be stored"):
            await runner.asubmit(BackgroundTask(record, "a", Decimal(1), ident=object()))
        with pytest.raises(TypeError, match="cannot be a lambda"):
            await runner.asubmit(BackgroundTask(lambda: None))
        with pytest.raises(TypeError, match="closure or a function defined inside"):
            await runner.asubmit(BackgroundTask(local))
        with pytest.raises(TypeError, match=r"functools\.partial"):
            await runner.asubmit(BackgroundTask(functools.partial(record_sync, "p")))
        with pytest.raises(TypeError, match="bound method"):
            await runner.asubmit(BackgroundTask(runner.get, "x"))
        # JSON, but a worker could not call the function with it: a set becomes a list, and
        # `label` takes a str.
        with pytest.raises(TypeError, match=r"record_sync.* cannot be stored: .*'label'"):
            await runner.asubmit(BackgroundTask(record_sync, {1, 2}))
        with pytest.raises(TypeError, match=r"cannot be stored: .*missing"):
            await runner.asubmit(BackgroundTask(record_sync))
        assert sum(runner.stats().values()) == 0


async def test_a_sequence_keeps_its_order_in_the_store(db):
    sequence = BackgroundTasks(
        [
            BackgroundTask(sleep_and_mark, 0.05, "first"),
            BackgroundTask(record_sync, "second"),
            BackgroundTask(record_sync, "third"),
        ]
    )
    async with durable_tasks.runner(db) as runner:
        await runner.asubmit(sequence)
        await runner.join(timeout=5)
    assert durable_tasks.calls == [("second", "sync"), ("third", "sync")]


async def test_drain_releases_unfinished_tasks_without_burning_the_attempt(db, backbeat_log):
    runner = durable_tasks.runner(db, shutdown_timeout=0.1)
    async with runner:
        task_id = await runner.asubmit(BackgroundTask(sleep_and_mark, 30, "never"))
        await asyncio.sleep(0.2)
        assert runner.get(task_id).state == "running"
    info = runner.get(task_id)
    assert (info.state, info.attempts) == ("pending", 0)
    assert any("released to the store" in m for m in backbeat_log.messages(30))


async def test_a_task_run_by_the_process_that_wrote_it_sees_its_context(db):
    async with durable_tasks.runner(db) as runner:
        request_id.set("req-9")
        await runner.asubmit(BackgroundTask(record, "ctx", Decimal(0), uuid.UUID(int=0)))
        await runner.join(timeout=5)
    assert durable_tasks.calls[0][1][2] == "req-9"


# --- App -----------------------------------------------------------------------------------


def test_app_writes_tasks_before_the_response_and_runs_them_after(db):
    @post("/pay", background=BackgroundTask(record_sync, "decorator"))
    async def pay(tasks: BackgroundTasks) -> JSONResponse:
        job = tasks.add_task(record, "injected", Decimal("9.99"), uuid.UUID(int=7))
        return JSONResponse({"task": job.id}, status_code=202)

    runner = durable_tasks.runner(db)
    app = App(routes=[pay, status_route(runner)], runner=runner)
    with TestClient(app) as client:
        response = client.post("/pay")
        assert response.status_code == 202
        task_id = response.json()["task"]
        assert client.get(f"/tasks/{task_id}").json()["state"] == "succeeded"
    assert [label for label, _ in durable_tasks.calls] == ["decorator", "injected"]


def test_a_route_task_that_cannot_be_stored_fails_at_startup(db):
    @post("/x", background=BackgroundTask(lambda: None))
    async def handler() -> None: ...

    app = App(routes=[handler], runner=durable_tasks.runner(db))
    with pytest.raises(UnrunnableTasks, match=r"POST /x: .*cannot be a lambda"), TestClient(app):
        pass


def test_a_task_that_cannot_be_stored_turns_the_request_into_a_500(db, backbeat_log):
    @post("/x")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(record, "bad", Decimal(1), ident=object())

    app = App(routes=[handler], runner=durable_tasks.runner(db))
    with TestClient(app) as client:
        response = client.post("/x")
        assert response.status_code == 500
        assert sum(app.runner.stats().values()) == 0
    assert any("cannot be stored" in str(r.exc_info[1]) for r in backbeat_log.records if r.exc_info)


def test_when_the_store_cannot_be_written_the_client_gets_a_503_not_a_2xx(tmp_path):
    db = f"sqlite:///{tmp_path}/tasks.db"

    @post("/x", background=BackgroundTask(record_sync, "never"))
    async def handler() -> dict[str, bool]:
        return {"ok": True}

    app = App(routes=[handler], runner=durable_tasks.runner(db))
    with StarletteTestClient(app) as client:
        take_the_store_away(Path(db.removeprefix("sqlite:///")))
        response = client.post("/x")
        assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert durable_tasks.calls == []


async def test_a_long_task_keeps_its_lease_and_runs_once(db, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKBEAT_TEST_OUT", str(tmp_path / "marks.txt"))
    first = durable_tasks.runner(db, lease=0.3, poll_interval=0.05)
    second = durable_tasks.runner(db, lease=0.3, poll_interval=0.05)
    second.register(sleep_and_mark)
    async with first, second:
        await first.asubmit(BackgroundTask(sleep_and_mark, 1.0, "long"))
        await first.join(timeout=5)
    marks = (tmp_path / "marks.txt").read_text().splitlines()
    assert [line.split()[0] for line in marks] == ["long"]  # one run, though 3 leases long
    assert first.stats()["succeeded"] == 1


async def test_a_delay_is_kept_in_the_store(db):
    async with durable_tasks.runner(db, poll_interval=0.05) as runner:
        task_id = await runner.asubmit(BackgroundTask(record_sync, "later").using(delay=0.3))
        assert runner.get(task_id).state == "scheduled"
        await runner.join(timeout=5)
        info = runner.get(task_id)
    assert (info.started_at - info.created_at).total_seconds() >= 0.3


@pytest.mark.parametrize("url", ["sqlite", "memory://"])
async def test_delays_and_retries_wake_at_their_due_time_not_at_the_next_poll(db, url):
    # poll_interval is 5 s: a due time must wake the claim loop by itself.
    store = db if url == "sqlite" else url
    async with durable_tasks.runner(store, poll_interval=5) as runner:
        later = await runner.asubmit(BackgroundTask(record_sync, "later").using(delay=0.2))
        retried = await runner.asubmit(BackgroundTask(flaky, "again").using(backoff=0.1))
        await runner.join(timeout=3)
        later_info, retried_info = runner.get(later), runner.get(retried)
    late_by = (later_info.started_at - later_info.created_at).total_seconds() - 0.2
    assert 0 <= late_by < 0.15
    assert retried_info.attempts == 2
    # The retry waited its jittered backoff (<= 0.1 s), not the poll interval.
    assert (retried_info.finished_at - retried_info.created_at).total_seconds() < 0.6


async def test_finished_tasks_are_purged_automatically(db):
    async with durable_tasks.runner(db, finished_ttl=0.1) as runner:
        task_id = await runner.asubmit(BackgroundTask(record_sync, "x"))
        await runner.join(timeout=5)
        assert runner.get(task_id) is not None
        await asyncio.sleep(0.35)
        assert runner.get(task_id) is None


def test_middleware_with_a_store_writes_tasks_when_the_framework_hands_them_over(db):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse as StarletteJSON
    from starlette.routing import Route

    from backbeat import BackbeatMiddleware

    async def endpoint(request):
        job = BackgroundTask(record, "mw", Decimal("2"), uuid.UUID(int=3))
        return StarletteJSON({"task": job.id}, background=job)

    runner = durable_tasks.runner(db)
    app = BackbeatMiddleware(Starlette(routes=[Route("/", endpoint)]), runner=runner)
    with TestClient(app) as client:
        task_id = client.get("/").json()["task"]
        assert runner.get(task_id).state == "succeeded"
    assert durable_tasks.calls[0][0] == "mw"


def test_a_delay_survives_being_written_ahead_of_the_response(db):
    @post("/later")
    async def later(tasks: BackgroundTasks) -> JSONResponse:
        job = tasks.add_task(record_sync, "delayed")
        job.using(delay=0.4)
        return JSONResponse({"task": job.id})

    runner = durable_tasks.runner(db, poll_interval=0.05)
    app = App(routes=[later], runner=runner)
    with StarletteTestClient(app) as client:
        task_id = client.post("/later").json()["task"]
        assert runner.get(task_id).state == "scheduled"
        time.sleep(0.8)
        info = runner.get(task_id)
    assert info.state == "succeeded"
    assert (info.started_at - info.created_at).total_seconds() >= 0.4


@pytest.mark.parametrize("url", ["memory://"])
async def test_the_runner_works_the_same_on_the_memory_store(url):
    async with durable_tasks.runner(url) as runner:
        ok = await runner.asubmit(BackgroundTask(record, "m", Decimal("3"), uuid.UUID(int=9)))
        bad = await runner.asubmit(BackgroundTask(flaky, "m2"))
        await runner.join(timeout=5)
        assert (runner.get(ok).state, runner.get(bad).state) == ("succeeded", "failed")
        assert runner.get(bad).attempts == 2
    assert durable_tasks.calls[0] == ("m", (Decimal("3"), uuid.UUID(int=9), "-"))


async def audit(label: str) -> None:
    """A plain function defined next to this module's handlers."""
    durable_tasks.calls.append((label, "audit"))


def test_a_plain_function_next_to_the_handlers_is_stored_and_found_again(db):
    @post("/audit")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(audit, "plain")

    app = App(routes=[handler], runner=Runner(store=db))
    with TestClient(app) as client:
        assert client.post("/audit").status_code == 201
    assert durable_tasks.calls == [("plain", "audit")]
    # Another process with the same app finds it by name (and only by what the app declared).
    other = Runner(store=db)
    App(routes=[handler], runner=other)
    assert other._engine.registry.get(f"{__name__}:audit") is audit
    assert other._engine.registry.get(f"{__name__}:handler") is None  # a route, not a function
    assert other._engine.registry.get("os:system") is None
    assert other._engine.registry.get("tests.apps.durable_tasks:record") is None


def test_a_plain_function_another_process_could_not_find_is_refused_before_the_response(
    db, backbeat_log
):
    @post("/x")
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(record_sync, "elsewhere")  # defined in a module with no handlers

    app = App(routes=[handler], runner=Runner(store=db))
    with TestClient(app) as client:
        response = client.post("/x")
        assert response.status_code == 500
        assert app.runner.stats()["pending"] == 0
    assert durable_tasks.calls == []
    errors = [str(r.exc_info[1]) for r in backbeat_log.records if r.exc_info]
    assert any("is not declared to this app" in e and "@task" in e for e in errors), errors
    assert any("runner.register(record_sync)" in e for e in errors)


def test_a_task_too_large_to_store_is_refused_before_the_response(db, backbeat_log):
    @post("/big")
    async def big(data: dict[str, str], tasks: BackgroundTasks) -> None:
        tasks.add_task(record_sync, data["text"])

    app = App(routes=[big], runner=durable_tasks.runner(db, max_task_size=10_000))
    with TestClient(app) as client:
        assert client.post("/big", json={"text": "a" * 5_000}).status_code == 201
        assert client.post("/big", json={"text": "a" * 20_000}).status_code == 500
        counts = app.runner.stats()
    assert counts["succeeded"] == 1 and sum(counts.values()) == 1
    errors = [str(r.exc_info[1]) for r in backbeat_log.records if r.exc_info]
    assert any("over the limit of 10000 (Runner(max_task_size=...))" in e for e in errors)
    with pytest.raises(ValueError, match="max_task_size"):
        Runner(max_task_size=0)


async def test_a_worker_refuses_a_stored_task_over_max_task_size(shared_db, backbeat_log):
    """A task over the limit in the store (written by a runner with a larger limit, or
    forged: a 50 MB argument ran and took the worker's memory) is dead-lettered undecoded."""
    async with durable_tasks.runner(shared_db, execute=False, max_task_size=100_000) as writer:
        big = await writer.asubmit(BackgroundTask(record_sync, "big", "a" * 50_000))
        small = await writer.asubmit(BackgroundTask(record_sync, "small"))
    async with durable_tasks.runner(shared_db, max_task_size=10_000, poll_interval=0.05) as worker:
        await worker.join(timeout=5)
        infos = [await worker.aget(big), await worker.aget(small)]
    assert [info.state for info in infos] == ["failed", "succeeded"]
    assert "over the limit of 10000 (Runner(max_task_size=...))" in infos[0].error
    assert durable_tasks.calls == [("small", "sync")]
    assert any(big in m and "over the limit" in m for m in backbeat_log.messages())


def test_a_script_enqueues_with_a_plain_submit_and_the_app_runs_it(shared_db):
    db = shared_db
    # A cron job or a script: no event loop, the runner never started.
    script_runner = durable_tasks.runner(db)
    task_id = script_runner.submit(BackgroundTask(record_sync, "from cron"))
    assert script_runner.get(task_id).state == "pending"

    async def serve() -> None:
        async with durable_tasks.runner(db, poll_interval=0.05) as app_runner:
            await app_runner.join(timeout=5)

    asyncio.run(serve())
    assert script_runner.get(task_id).state == "succeeded"
    assert durable_tasks.calls == [("from cron", "sync")]


def test_submit_on_commit_refuses_now_and_writes_only_when_called_back(shared_db):
    """`Runner.submit_on_commit` (Django's backend, in `transaction.atomic()`): what cannot
    be stored is refused at once; nothing is written until the hook calls back, then the
    task under the id returned; one never called back (rolled back) is never written."""
    runner = durable_tasks.runner(shared_db)
    commits: list[Callable[[], None]] = []
    task_id = runner.submit_on_commit(BackgroundTask(record_sync, "committed"), commits.append)
    dropped = runner.submit_on_commit(BackgroundTask(record_sync, "rolled back"), lambda _: None)
    with pytest.raises(TypeError, match="cannot be stored"):
        runner.submit_on_commit(BackgroundTask(record_sync, {1, 2}), commits.append)
    assert len(commits) == 1 and runner.stored(task_id) is None
    commits[0]()
    assert runner.stored(task_id).state == "pending"
    assert runner.stored(dropped) is None
    with pytest.raises(TypeError, match="this runner has no store"):
        Runner().submit_on_commit(BackgroundTask(record_sync, "x"), commits.append)


def test_sync_calls_work_from_a_thread_while_the_runner_runs_and_from_its_own_loop(db):
    """Sync code reaches the store through the runner's loop (other threads) or a portal
    thread (code on that very loop), never by blocking reads of its own."""
    seen: dict[str, object] = {}

    async def serve() -> None:
        async with durable_tasks.runner(db) as runner:

            def from_a_thread() -> None:  # a sync route handler, in a thread pool
                task_id = runner.submit(BackgroundTask(record_sync, "from a thread"))
                seen["thread"] = runner.result(task_id, timeout=5)
                seen["stats"] = runner.stats()["succeeded"]

            await asyncio.to_thread(from_a_thread)
            task_id = await runner.asubmit(BackgroundTask(record_sync, "on the loop"))
            await runner.join(timeout=5)
            seen["loop"] = runner.get(task_id).state  # sync, on the runner's own loop
            seen["cancel"] = runner.cancel(task_id)  # finished: nothing to cancel

    asyncio.run(serve())
    assert seen == {"thread": None, "stats": 1, "loop": "succeeded", "cancel": False}
    assert sorted(durable_tasks.calls) == [("from a thread", "sync"), ("on the loop", "sync")]


def test_a_runner_never_started_cancels_from_sync_code(shared_db):
    script_runner = durable_tasks.runner(shared_db)
    task_id = script_runner.submit(BackgroundTask(record_sync, "never").using(delay=60))
    assert script_runner.get(task_id).state == "scheduled"
    assert script_runner.cancel(task_id) is True
    assert script_runner.get(task_id).state == "cancelled"
    assert script_runner.stats()["cancelled"] == 1
