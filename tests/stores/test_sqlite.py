"""What is the SQLite store's own: the file, its URLs, its group commit."""

import asyncio
import logging
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from backbeat import Runner
from backbeat.ids import new_id
from backbeat.stores import (
    MemoryStore,
    NewTask,
    SQLiteStore,
    StoreError,
    StoreUnavailable,
    open_store,
)
from backbeat.stores.sqlite import path_from_url
from tests.stores.rows import failed, new_task

pytestmark = pytest.mark.anyio


async def test_the_file_is_in_wal_mode_and_shared_with_other_connections(sqlite_store, tmp_path):
    store = sqlite_store
    await store.enqueue([new_task()])
    other = SQLiteStore(tmp_path / "tasks.db")
    try:
        assert (await other.counts())["pending"] == 1
        mode = other.file.connection().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await other.close()


async def test_concurrent_writes_share_transactions(sqlite_store):
    store = sqlite_store
    before = store.transactions
    await asyncio.gather(*(store.enqueue([new_task()]) for _ in range(200)))
    assert (await store.counts())["pending"] == 200
    assert store.transactions - before < 200  # grouped: fewer commits than writes


async def test_urls(tmp_path):
    assert str(path_from_url("sqlite:///tasks.db")) == "tasks.db"
    assert str(path_from_url("sqlite:////var/lib/x.db")) == "/var/lib/x.db"
    for bad in ("sqlite://tasks.db", "sqlite:///", "postgres://x"):
        with pytest.raises(StoreError):
            path_from_url(bad)
    with pytest.raises(StoreError, match="unknown store 'mysql'"):
        open_store("mysql://localhost")
    assert isinstance(open_store("memory://"), MemoryStore)
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    assert not (tmp_path / "t.db").exists()  # nothing before `open`
    await store.open()
    assert (tmp_path / "t.db").exists()
    await store.close()


async def test_a_missing_directory_of_an_absolute_path_is_waited_for_not_created(
    tmp_path, monkeypatch
):
    """An absolute path is the deployment's: its directory missing is a volume not mounted
    yet (unavailable: the app waits), not one to make on the disk beneath it."""
    store = open_store(f"sqlite:///{tmp_path}/volume/tasks.db")
    with pytest.raises(StoreUnavailable, match=r"volume.* does not exist \(a volume not mounted"):
        await store.open()
    assert not (tmp_path / "volume").exists()
    (tmp_path / "volume").mkdir()  # mounted
    await store.open()
    await store.close()
    # A relative path is the project's own: its directories are made.
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///.backbeat/tasks.db")
    await relative.open()
    assert (tmp_path / ".backbeat" / "tasks.db").exists()
    await relative.close()


async def test_a_corrupt_or_unreadable_file_is_a_clear_error_at_open(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database at all" * 100)
    store = SQLiteStore(corrupt)  # nothing is touched before `open`
    with pytest.raises(StoreError, match=r"cannot open the SQLite store .*corrupt\.db"):
        await store.open()
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteStore(directory).open()


async def test_sqlite_store_files_are_private(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path("new") / "deeper" / "tasks.db"
    store = SQLiteStore(path)
    now = time.time()
    await store.enqueue([NewTask(new_id(), "n", "{}", now, now)])
    files = [path, path.with_name("tasks.db-wal"), path.with_name("tasks.db-shm")]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    for directory in (path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    await store.close()


async def test_a_relative_path_is_logged_absolute_and_a_new_store_loudly(
    tmp_path, monkeypatch, backbeat_log
):
    monkeypatch.chdir(tmp_path)
    async with Runner(store="sqlite:///tasks.db"):
        pass
    async with Runner(store="sqlite:///tasks.db"):
        pass
    absolute = tmp_path / "tasks.db"
    created = [m for m in backbeat_log.messages(logging.WARNING) if "created" in m]
    assert created == [f"backbeat: no store at {absolute}: created a new, empty one"]
    opened = [m for m in backbeat_log.messages(logging.INFO) if "task store" in m]
    assert opened == [f"backbeat: task store: the SQLite file {absolute}"] * 2
    assert repr(SQLiteStore("tasks.db")) == f"SQLiteStore({str(absolute)!r})"


async def test_a_task_whose_limits_cannot_be_read_is_dead_lettered_and_nothing_else_stops(
    sqlite_store, tmp_path
):
    import sqlite3

    bad = new_task(rate_gate='["rate", "x"]', rate_limit=5, rate_window=1.0)
    gated = new_task(concurrency_gate='["concurrency", "y"]', max_concurrency=1)
    plain = new_task()
    await sqlite_store.enqueue([bad, gated, plain])
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        conn.execute("UPDATE backbeat_tasks SET rate_limit = 'lots' WHERE id = ?", (bad.id,))
    claimed = {c.id for c in await sqlite_store.claim("w", limit=10, lease=30)}
    claimed |= {c.id for c in await sqlite_store.claim("w", limit=10, lease=30)}
    assert claimed == {gated.id, plain.id}
    status = await sqlite_store.get(bad.id)
    assert status.state == "failed"
    assert "field rate_limit/rate_window is missing or malformed" in status.error


async def test_a_store_from_before_held_until_keeps_its_held_tasks_with_their_holds(tmp_path):
    """A backbeat before `held_until` kept a held task's hold in `lease_until`: opening the
    file moves it, so a hold that ran out is claimable and one that did not is not."""
    path = tmp_path / "tasks.db"
    store = SQLiteStore(path)
    ran_out = new_task(held_until=time.time() - 60)
    still_held = new_task(held_until=time.time() + 600)
    await store.enqueue([ran_out, still_held])
    await store.close()
    conn = sqlite3.connect(path)
    with conn:  # the file as that backbeat left it
        conn.execute("DROP INDEX backbeat_held_until")
        conn.execute("UPDATE backbeat_tasks SET lease_until = held_until")
        conn.execute("ALTER TABLE backbeat_tasks DROP COLUMN held_until")
        conn.execute(
            "CREATE INDEX backbeat_held ON backbeat_tasks (lease_until) WHERE state = 'held'"
        )
    conn.close()
    store = SQLiteStore(path)
    try:
        assert [task.id for task in await store.claim("w", 10, 30)] == [ran_out.id]
        rows = store.file.connection().execute(
            "SELECT id, held_until, lease_until FROM backbeat_tasks WHERE state = 'held'"
        )
        assert [(row[0], row[2]) for row in rows] == [(still_held.id, None)]
        await store.activate([still_held.id])
        assert [task.id for task in await store.claim("w", 10, 30)] == [still_held.id]
    finally:
        await store.close()


async def test_a_retried_attempt_never_ends_before_it_started(sqlite_store):
    """A retry's end is SQLite's clock, coarser than Python's start: a start a hair ahead of
    it (here pushed 1 s ahead, as a host whose clock steps back would) must not read as an
    attempt that ended before it began."""
    store = sqlite_store
    task = new_task(retries=1)
    await store.enqueue([task])
    [claim] = await store.claim("w", 1, 30.0)
    ahead = time.time() + 1
    conn = store.file.connection()
    conn.execute("UPDATE backbeat_tasks SET started_at = ? WHERE id = ?", (ahead, task.id))
    conn.commit()
    await store.finish([failed(claim, "ValueError: once", retry_at=time.time())])
    [attempt] = await store.attempts(task.id)
    assert attempt.started_at == ahead
    assert attempt.finished_at >= attempt.started_at
