"""What happens to accepted tasks when the SQLite store itself goes wrong: a row that
cannot be read, the file deleted under a running server, corrupt pages, a full disk.
Real files, real uvicorn and worker processes."""

import logging
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import httpx
import pytest
from starlette.testclient import TestClient

from backbeat import App, BackgroundTask, Runner, post
from backbeat.ids import new_id
from backbeat.stores import DuplicateTask, NewTask, SQLiteStore, StoreError, StoreUnavailable
from tests.apps import durable_tasks
from tests.serving import background_process, uvicorn
from tests.test_workers import env_for, post_tasks, wait_until

pytestmark = pytest.mark.anyio


async def test_a_row_that_cannot_be_read_is_dead_lettered_and_the_worker_goes_on(
    tmp_path, backbeat_log
):
    url = f"sqlite:///{tmp_path}/tasks.db"
    async with durable_tasks.runner(url, execute=False) as writer:
        bad = await writer.asubmit(
            BackgroundTask(durable_tasks.record, "bad", Decimal(1), uuid.uuid4())
        )
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        conn.execute("UPDATE backbeat_tasks SET after = '[not json' WHERE id = ?", (bad,))
    durable_tasks.calls.clear()
    async with durable_tasks.runner(url, poll_interval=0.05) as runner:
        good = await runner.asubmit(
            BackgroundTask(durable_tasks.record, "good", Decimal(2), uuid.uuid4())
        )
        await runner.join(timeout=5)
        assert runner.get(good).state == "succeeded"
        info = runner.get(bad)
    assert info.state == "failed"
    assert "not valid JSON" in info.error
    assert [label for label, _ in durable_tasks.calls] == ["good"]
    assert any("not valid JSON" in message for message in backbeat_log.messages())


class FailingOnce(SQLiteStore):
    """A real SQLite store whose first claims raise what a bug would (not a StoreError)."""

    failures = 2

    async def claim(self, worker, limit, lease, **options):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in the claim")
        return await super().claim(worker, limit, lease, **options)


async def test_any_error_in_the_claim_loop_is_logged_and_the_loop_goes_on(tmp_path, backbeat_log):
    async with durable_tasks.runner(
        FailingOnce(tmp_path / "tasks.db"), poll_interval=0.05
    ) as runner:
        task_id = await runner.asubmit(
            BackgroundTask(durable_tasks.record, "x", Decimal(1), uuid.uuid4())
        )
        await runner.join(timeout=5)
        assert runner.get(task_id).state == "succeeded"
    errors = backbeat_log.messages()
    assert sum("cannot claim tasks" in m and "a bug in the claim" in m for m in errors) == 2


@pytest.mark.process
def test_a_worker_survives_a_corrupt_row_and_stops_cleanly_on_sigterm(tmp_path):
    env = env_for(f"sqlite:///{tmp_path}/tasks.db", BACKBEAT_TEST_EXECUTE="0")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        first = post_tasks(server.url, 2, seconds=0, prefix="a")
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        conn.execute("UPDATE backbeat_tasks SET after = '{{' WHERE rowid = 1")
    command = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    with background_process(command, tmp_path, env=env, name="worker") as (worker, log):
        wait_until(lambda: len(set(open_marks(tmp_path))) == 1, 10, "the good task", log.read_text)
        with uvicorn("tests.apps.durable_app:app", tmp_path, env=env, name="again") as server:
            later = post_tasks(server.url, 3, seconds=0, prefix="b")
        wait_until(lambda: len(set(open_marks(tmp_path))) == 4, 10, "later tasks", log.read_text)
        worker.terminate()
        assert worker.wait(timeout=15) == 0
    output = log.read_text()
    assert "Traceback" not in output
    assert "not valid JSON" in output
    assert set(open_marks(tmp_path)) == {first[1], *later}


def open_marks(tmp_path) -> list[str]:
    path = tmp_path / "marks.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.process
def test_a_deleted_store_file_is_refused_with_503_never_a_2xx(tmp_path):
    env = env_for(f"sqlite:///{tmp_path}/tasks.db", BACKBEAT_TEST_EXECUTE="0")
    with uvicorn("tests.apps.durable_app:app", tmp_path, env=env) as server:
        post_tasks(server.url, 3, seconds=0, prefix="before")
        # Their activation (a write of the server's, after each response) must be done
        # first, or it would be the write that finds the file gone.
        looking = durable_tasks.runner(env["BACKBEAT_TEST_STORE"])
        wait_until(lambda: looking.stats()["pending"] == 3, 10, "the activations")
        for path in tmp_path.glob("tasks.db*"):
            path.unlink()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            statuses = []
            for index in range(20):
                response = client.post("/work", params={"seconds": 0, "label": f"after{index}"})
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"
                else:
                    assert response.status_code == 201
                    task = response.json()["id"]
                    assert client.get(f"/tasks/{task}").status_code == 200
        # The write that finds the file gone is refused (503) — usually the first request's;
        # what matters is that no 2xx ever goes into the unlinked file (checked below).
        assert set(statuses) <= {201, 503}
        accepted = [f"after{i}" for i, status in enumerate(statuses) if status == 201]
        assert accepted  # then the store is opened again at its path
        log = server.log()
    assert "was deleted or replaced while open; 3 unfinished task(s) in it are gone" in log
    command = [sys.executable, "-m", "backbeat", "worker", "tests.apps.durable_app:app"]
    with background_process(command, tmp_path, env=env, name="worker") as (_, worker_log):
        wait_until(
            lambda: set(accepted) <= set(open_marks(tmp_path)),
            10,
            "a worker started afterwards runs every accepted task",
            worker_log.read_text,
        )


async def test_a_database_with_corrupt_pages_is_refused_at_start_up(tmp_path):
    path = tmp_path / "tasks.db"
    store = SQLiteStore(path)
    now = time.time()
    rows = [NewTask(new_id(), "n", '{"args": ["' + "x" * 500 + '"]}', now, now) for _ in range(200)]
    await store.enqueue(rows)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    size = path.stat().st_size
    assert size > 20 * page_size
    with open(path, "r+b") as file:  # noqa: ASYNC230 - scribble over a middle page
        file.seek((size // page_size // 2) * page_size + 100)
        file.write(os.urandom(page_size - 200))
    with pytest.raises(StoreError, match="is corrupt"):
        await SQLiteStore(path).open()
    with pytest.raises(StoreError, match="is corrupt"):  # the app does not start on it
        async with Runner(store=f"sqlite:///{path}"):
            pass


@pytest.fixture
def small_volume(tmp_path):
    mount = tmp_path / "volume"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 3 MB tmpfs here (needs root): {result.stderr.decode()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.process
async def test_a_full_disk_is_refused_then_recovered_without_a_restart(small_volume):
    filler = small_volume / "filler"
    filler.write_bytes(b"\0" * 1_000_000)
    path = small_volume / "tasks.db"
    store = SQLiteStore(path)
    payload = '{"args": ["' + "x" * 2000 + '"]}'
    written = 0
    wal_sizes = []
    with pytest.raises(StoreUnavailable, match="is full"):
        for _ in range(2000):
            now = time.time()
            await store.enqueue([NewTask(new_id(), "n", payload, now, now) for _ in range(10)])
            written += 10
            wal_sizes.append(path.with_name("tasks.db-wal").stat().st_size)
    assert written > 100
    assert max(wal_sizes) < 2_200_000  # the WAL is checkpointed and truncated as it goes
    filler.unlink()  # room again: the same store takes writes, no restart needed
    now = time.time()
    await store.enqueue([NewTask(new_id(), "n", payload, now, now)])
    assert (await store.counts())["pending"] == written + 1
    await store.close()
    reopened = SQLiteStore(path)  # and a restart finds everything
    assert (await reopened.counts())["pending"] == written + 1
    await reopened.close()


class WritingTwice(SQLiteStore):
    """A real SQLite store whose enqueue writes its tasks a second time, as a bug would:
    the second write raises the store's own `DuplicateTask`."""

    async def enqueue(self, tasks):
        ids = await super().enqueue(tasks)
        await super().enqueue(tasks)
        return ids


def test_a_duplicate_task_id_is_a_500_not_a_503_to_try_again(tmp_path, backbeat_log):
    """A 503 says "try later"; a duplicate id fails the same way every time."""

    @post("/x", background=BackgroundTask(durable_tasks.record_sync, "x"))
    async def handler() -> dict[str, bool]:
        return {"ok": True}

    store = WritingTwice(tmp_path / "tasks.db")
    app = App(routes=[handler], runner=Runner(store=store))
    with TestClient(app) as client:
        response = client.post("/x")
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert any(isinstance(r.exc_info[1], DuplicateTask) for r in backbeat_log.records if r.exc_info)


class OutcomesStuck(SQLiteStore):
    """A real SQLite store that cannot take outcomes nor renew leases for a while (a write
    path cut off), while claims still go through."""

    stuck_until = 0.0

    def _stuck(self) -> None:
        if time.monotonic() < self.stuck_until:
            raise StoreUnavailable("outcomes cannot be written now")

    async def finish(self, settlements):
        self._stuck()
        return await super().finish(settlements)

    async def renew(self, receipts, lease):
        self._stuck()
        return await super().renew(receipts, lease)


async def test_a_finished_task_claimed_again_before_its_outcome_is_recorded_is_not_run_again(
    tmp_path, backbeat_log
):
    """Its lease ran out while its outcome could not be written, and this worker's own
    claim took it over: the outcome is recorded under the new claim, the task not run twice
    (it was, once the store answered again)."""
    store = OutcomesStuck(tmp_path / "tasks.db")
    durable_tasks.calls.clear()
    async with durable_tasks.runner(store, lease=0.5, poll_interval=0.05) as runner:
        store.stuck_until = time.monotonic() + 2.0
        task_id = await runner.asubmit(
            BackgroundTask(durable_tasks.record, "once", Decimal(1), uuid.uuid4())
        )
        await runner.join(timeout=10)
        info = runner.get(task_id)
    assert info.state == "succeeded"
    assert [label for label, _ in durable_tasks.calls] == ["once"]
    warnings = backbeat_log.messages(logging.WARNING)
    assert any("it is recorded, not run again" in m for m in warnings)
