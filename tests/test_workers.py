"""Durability with real processes: uvicorn killed with SIGKILL, `backbeat worker`s, the CLI."""

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from backbeat import BackgroundTask, Runner
from tests.apps import durable_tasks
from tests.serving import ROOT, background_process, uvicorn

pytestmark = pytest.mark.process


def env_for(store_url: str, **overrides: str) -> dict[str, str]:
    return {"BACKBEAT_TEST_STORE": store_url, **overrides}


def wait_until(condition, timeout: float, what: str, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log()}")
        time.sleep(0.05)


def post_tasks(
    base: str, count: int, seconds: float, prefix: str, path: str = "/work"
) -> list[str]:
    labels = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for index in range(count):
            label = f"{prefix}{index}"
            response = client.post(path, params={"seconds": seconds, "label": label})
            assert response.status_code == 201, response.text
            labels.append(label)
    return labels


def backbeat(*args: str, tmp_path=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backbeat", *args],
        cwd=tmp_path or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def workers_alive(store_url: str) -> list[dict]:
    listed = backbeat("workers", "--store", store_url, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


# /work adds a registered function; /audit a plain function defined next to the handler.
TASK_ROUTES = pytest.mark.parametrize("path", ["/work", "/audit"])


@TASK_ROUTES
def test_every_accepted_task_completes_after_a_kill_9(tmp_path, path, shared_db):
    env = env_for(shared_db, BACKBEAT_TEST_LEASE="1", BACKBEAT_TEST_CONCURRENCY="10")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env, name="first") as server:
        labels = post_tasks(server.url, 120, seconds=0.3, prefix="k", path=path)
        assert len(server.marks()) < 120  # most are still running or waiting
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    done_before = set(server.marks())
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env, name="second") as restarted:
        wait_until(
            lambda: set(restarted.marks()) >= set(labels),
            timeout=40,
            what="every accepted task to complete after the restart",
            log=restarted.log,
        )
        counts = Runner(store=env["BACKBEAT_TEST_STORE"]).stats()
    assert set(restarted.marks()) == set(labels)
    assert "unknown task" not in restarted.log()
    assert counts["succeeded"] == 120 and counts["failed"] == 0
    assert len(done_before) < 120


@TASK_ROUTES
def test_two_workers_share_the_work_and_a_sigterm_loses_nothing(tmp_path, path, shared_db):
    app_env = env_for(shared_db, BACKBEAT_TEST_EXECUTE="0")
    worker_env = env_for(shared_db, BACKBEAT_TEST_SHUTDOWN="0.1", BACKBEAT_TEST_LEASE="2")
    worker = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    with (
        uvicorn("tests.apps.durable_app:app", tmp_path, env=app_env, name="app") as server,
        background_process(
            [*worker, "--concurrency", "4"], tmp_path, env=worker_env, name="w1"
        ) as (first, first_log),
        background_process(
            [*worker, "--concurrency", "4"], tmp_path, env=worker_env, name="w2"
        ) as (second, second_log),
    ):
        labels = post_tasks(server.url, 24, seconds=1.0, prefix="t", path=path)
        # Let both workers get going, then stop the first one in the middle of its tasks.
        wait_until(
            lambda: len(server.marks()) >= 8, 20, "the workers to start", first_log.read_text
        )
        alive = [
            json.loads(line)
            for line in backbeat("workers", "--store", shared_db, "--json").stdout.splitlines()
        ]
        assert sorted(w["pid"] for w in alive) == sorted([first.pid, second.pid])
        assert all(w["concurrency"] == 4 and w["queues"] is None for w in alive)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        alive = [
            json.loads(line)
            for line in backbeat("workers", "--store", shared_db, "--json").stdout.splitlines()
        ]
        assert [w["pid"] for w in alive] == [second.pid]  # a stopped worker says so
        wait_until(
            lambda: set(server.marks()) >= set(labels),
            timeout=40,
            what="all tasks to be done",
            log=lambda: second_log.read_text(),
        )
        marks = server.marks_with_pids()
    by_label = collections.Counter(label for label, _ in marks)
    assert set(by_label) == set(labels)
    assert max(by_label.values()) == 1, "a task ran to completion twice"
    pids = {pid for _, pid in marks}
    assert pids == {first.pid, second.pid}  # both worked; the app itself ran nothing
    assert "released to the store" in first_log.read_text()


def test_two_busy_workers_run_two_thousand_tasks_once_each(tmp_path, shared_db):
    """Two workers writing outcomes by the dozen while renewing the leases of the very
    tasks whose outcomes they write: the PostgreSQL store once deadlocked there (renewal
    and outcome locking the same rows in two orders), wrote outcomes seconds late, past
    their leases, and 835 of 1,000 tasks ran twice."""

    async def write() -> None:
        async with durable_tasks.runner(shared_db, execute=False) as writer:
            for index in range(2000):
                await writer.asubmit(BackgroundTask(durable_tasks.sleep_and_mark, 0, f"n{index}"))

    asyncio.run(write())
    deadlocks_before = deadlocks(shared_db)
    worker = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    env = env_for(shared_db, BACKBEAT_TEST_LEASE="1")  # renewals every 1/3 s
    out = tmp_path / "marks.txt"
    with (
        background_process([*worker, "--concurrency", "32"], tmp_path, env=env, name="w1"),
        background_process([*worker, "--concurrency", "32"], tmp_path, env=env, name="w2"),
    ):
        wait_until(
            lambda: out.exists() and len(out.read_text().splitlines()) >= 2000,
            60,
            "every task to run",
            lambda: (tmp_path / "w1.log").read_text()[-3000:],
        )
        time.sleep(1.5)  # a lease past: an outcome written too late would show a second run
    runs = collections.Counter(line.split()[0] for line in out.read_text().splitlines())
    assert len(runs) == 2000
    assert [label for label, count in runs.items() if count > 1] == []
    assert deadlocks(shared_db) == deadlocks_before


def deadlocks(store_url: str) -> int | None:
    """PostgreSQL's count of deadlocks it broke in the store's database (None elsewhere)."""
    if not store_url.startswith("postgres"):
        return None
    import asyncpg

    async def read() -> int:
        conn = await asyncpg.connect(store_url.partition("?")[0])
        try:
            query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            return int(await conn.fetchval(query))
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.mark.anyio
async def test_dead_letter_status_retry(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    flag = tmp_path / "flag"
    async with durable_tasks.runner(url) as runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.fail_unless, str(flag)))
        await runner.join(timeout=5)
        assert runner.get(task_id).state == "failed"

    status = await asyncio.to_thread(backbeat, "status", "--store", url)
    assert status.returncode == 0, status.stderr
    assert any(line.split() == ["failed", "1"] for line in status.stdout.splitlines())
    assert task_id in status.stdout
    assert "FileNotFoundError" in status.stdout

    flag.write_text("now it exists")
    retried = await asyncio.to_thread(backbeat, "retry", "--failed", "--store", url)
    assert (retried.returncode, retried.stdout) == (0, "1 task(s) back to pending\n")
    again = Runner(store=url)
    again.register(durable_tasks.fail_unless)  # a new process knows only what it registers
    async with again as runner:
        await runner.join(timeout=5)
        info = runner.get(task_id)
    assert (info.state, info.attempts) == ("succeeded", 1)
    after = await asyncio.to_thread(backbeat, "status", "--store", url)
    assert "most recent failures" not in after.stdout

    purged = await asyncio.to_thread(backbeat, "purge", "--store", url, "--older-than", "0s")
    assert purged.stdout == "1 finished task(s) purged\n"


def test_cli_errors_are_one_line_and_exit_non_zero(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 200)
    cases = [
        (("status", "--store", "mysql://x"), 1, "unknown store 'mysql'"),
        (("status", "--store", f"sqlite:///{corrupt}"), 1, "cannot open the SQLite store"),
        (("worker", "no_such_module:app"), 1, "cannot import 'no_such_module'"),
        (("worker", "tests.apps.serving:app"), 1, "has no store"),
        (("worker", "tests.apps.serving"), 1, "is not MODULE:ATTR"),
        (("worker", "tests.apps.broken_app:app"), 1, "RuntimeError: DATABASE_URL is not set"),
        (("status", "--store", "sqlite:///typo.db"), 2, f"no store at {tmp_path}/typo.db"),
        (("retry", "--failed", "--store", "sqlite:///typo.db"), 2, "no store at"),
        (("purge", "--store", "sqlite:///a/b.db", "--older-than", "1d"), 2, "no store at"),
        (("retry", "--store", "sqlite:///x.db"), 1, "give task ids, or --failed"),
        (("purge", "--store", "sqlite:///x.db", "--older-than", "soon"), 2, "not a duration"),
        (("frobnicate",), 2, "invalid choice"),
    ]
    for args, code, message in cases:
        result = backbeat(*args, tmp_path=None if args[0] == "worker" else tmp_path)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        if args[0] != "frobnicate" and "duration" not in message:
            assert result.stderr.count("\n") == 1, result.stderr
    # Read-only commands create nothing where there was no store.
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "a").exists()


def test_cli_help_is_plain_text_and_quiet(tmp_path):
    result = backbeat("--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and "backbeat command" in result.stdout
    Runner(store=f"sqlite:///{tmp_path}/tasks.db").stats()  # the app creates the store
    status = backbeat("status", "--store", f"sqlite:///{tmp_path}/tasks.db")
    assert (status.returncode, status.stderr) == (0, "")  # no DeprecationWarning


@pytest.mark.anyio
async def test_the_cli_lists_shows_cancels_and_purges(shared_db):
    url = shared_db
    async with durable_tasks.runner(url, poll_interval=0.05) as runner:
        done = await runner.asubmit(BackgroundTask(durable_tasks.total, [1, 2]))
        await asyncio.sleep(0.002)  # ids order by their millisecond
        dead = await runner.asubmit(BackgroundTask(durable_tasks.fail_unless, "/nowhere"))
        await runner.join(timeout=5)
    await asyncio.sleep(0.002)
    waiting = durable_tasks.runner(url, execute=False)
    later = await waiting.asubmit(
        BackgroundTask(durable_tasks.record_sync, "later").using(delay=3600, queue="slow")
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return backbeat(*args, "--store", url)

    table = await asyncio.to_thread(cli, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "NAME", "QUEUE", "ATTEMPTS", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [
        [later, "scheduled"],
        [dead, "failed"],
        [done, "succeeded"],
    ]
    failed = await asyncio.to_thread(cli, "list", "--state", "failed", "--json")
    [document] = [json.loads(line) for line in failed.stdout.splitlines()]
    assert (document["id"], document["arguments"]) == (dead, {"args": ["/nowhere"], "kwargs": {}})
    shown = await asyncio.to_thread(cli, "show", dead)
    assert (
        "FileNotFoundError" in shown.stdout and "Traceback (most recent call last)" in shown.stdout
    )
    result = json.loads((await asyncio.to_thread(cli, "show", done, "--json")).stdout)
    assert (result["state"], result["result"]) == ("succeeded", {"sum": 3, "count": 2})
    missing = await asyncio.to_thread(cli, "show", "01NOSUCHTASK0000000000000")
    assert (missing.returncode, missing.stderr.count("\n")) == (1, 1)

    cancelled = await asyncio.to_thread(cli, "cancel", later, done)
    assert (cancelled.returncode, cancelled.stdout) == (1, "1 task(s) cancelled\n")
    assert f"1 of the 2 ids given not cancelled: {done} (succeeded)" in cancelled.stderr
    assert waiting.get(later).state == "cancelled"

    dry = await asyncio.to_thread(cli, "purge", "--state", "succeeded", "--dry-run")
    assert dry.stdout == "1 finished task(s) would be purged\n"
    assert waiting.get(done) is not None
    purged = await asyncio.to_thread(cli, "purge", "--state", "succeeded", "--state", "cancelled")
    assert purged.stdout == "2 finished task(s) purged\n"
    assert waiting.get(done) is None and waiting.get(dead) is not None


@pytest.mark.parametrize("given", ["--store", "BACKBEAT_STORE"])
def test_a_worker_runs_the_store_given_with_store(tmp_path, shared_db, given):
    """The app's own store is SQLite; `--store` (or BACKBEAT_STORE) points the worker at
    another one."""
    script_runner = durable_tasks.runner(shared_db)
    task_id = script_runner.submit(BackgroundTask(durable_tasks.sleep_and_mark, 0, "elsewhere"))
    env = env_for(f"sqlite:///{tmp_path}/app-own.db")
    worker = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    if given == "--store":
        worker += ["--store", shared_db]
    else:
        env["BACKBEAT_STORE"] = shared_db
    with background_process(worker, tmp_path, env=env, name="w") as (
        process,
        log,
    ):
        wait_until(
            lambda: script_runner.get(task_id).state == "succeeded", 20, "the task", log.read_text
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_a_worker_whose_store_cannot_be_reached_exits_with_one_line(tmp_path):
    from tests.serving import free_port

    env_store = f"sqlite:///{tmp_path}/tasks.db"
    result = subprocess.run(
        [
            sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app",
            "--store", f"redis://127.0.0.1:{free_port()}/0", "--exit-if-unreachable",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "BACKBEAT_TEST_STORE": env_store},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "backbeat worker: error" in line]
    assert len(lines) == 1 and "cannot be reached" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_started_elsewhere_waits_for_its_store_and_never_creates_one(tmp_path):
    # The app's store is `sqlite:///tasks.db`: relative to the directory each process starts in.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = elsewhere / "tasks.db"
    marks = tmp_path / "marks.txt"
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "BACKBEAT_TEST_STORE": "sqlite:///tasks.db",
        "BACKBEAT_TEST_OUT": str(marks),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            command, cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: f"no store at {named} yet" in log_path.read_text(),
            20,
            "the worker to say which file it waits for",
            log_path.read_text,
        )
        assert not named.exists()  # nothing made behind the app's back
        # The app creates the store there and writes a task: the worker runs it.
        app_runner = Runner(store=f"sqlite:///{named}", execute=False)
        app_runner.register(durable_tasks.sleep_and_mark)
        app_runner.submit(BackgroundTask(durable_tasks.sleep_and_mark, 0, "late"))
        wait_until(
            lambda: marks.exists() and "late" in marks.read_text(),
            20,
            "the worker to run the task once the store was there",
            log_path.read_text,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    assert f"store SQLiteStore('{named}')" in log_path.read_text()  # where it works, absolute
