"""The SQLite store's finished counts: kept exact by triggers on every path, made for old
stores."""

import sqlite3
import time

import pytest

from backbeat.stores import SQLiteStore
from tests.stores.rows import failed, new_task, succeeded

pytestmark = pytest.mark.anyio


def counted(path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT queue, state, n FROM backbeat_finished_counts WHERE n != 0")
        return {(queue, state): n for queue, state, n in rows}


def actual(path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT queue, state, count(*) FROM backbeat_tasks "
            "WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state"
        )
        return {(queue, state): n for queue, state, n in rows}


async def test_the_counts_follow_every_path_a_task_takes(sqlite_store, tmp_path):
    store = sqlite_store
    path = tmp_path / "tasks.db"
    mail = [new_task(queue="mail") for _ in range(6)]
    later = new_task(due_in=3600)
    held = new_task(held_until=time.time() + 60)
    await store.enqueue([*mail, later, held, new_task()])
    claims = await store.claim("w1", limit=10, lease=30)
    assert len(claims) == 7
    first, second, third, fourth, *running = claims
    await store.finish([succeeded(first), failed(second), failed(third, retry_at=time.time())])
    await store.cancel([fourth.id, later.id], "not wanted")
    await store.retry([second.id])
    await store.run_now([third.id])
    await store.activate([held.id])
    assert counted(path) == actual(path)

    await store.delete([first.id])
    await store.release([claim.receipt for claim in running[:1]])
    await store.finish([succeeded(running[1]), failed(running[2])])
    await store.purge(time.time() + 1, ("cancelled",))
    assert counted(path) == actual(path)
    assert sorted(state for _, state in counted(path)) == ["failed", "succeeded"]
    with sqlite3.connect(path) as conn:
        [(stored,)] = conn.execute("SELECT count(*) FROM backbeat_tasks")
    assert sum((await store.counts()).values()) == stored
    assert await store.queues() == ["default", "mail"]


async def test_waiting_tasks_not_due_yet_show_as_scheduled(sqlite_store):
    store = sqlite_store
    await store.enqueue([new_task(due_in=3600), new_task(queue="mail"), new_task(queue="mail")])
    assert (await store.counts())["scheduled"] == 1
    assert (await store.counts())["pending"] == 2
    assert (await store.counts("mail"))["scheduled"] == 0
    assert (await store.counts("default"))["scheduled"] == 1
    assert (await store.counts("default"))["pending"] == 0


async def test_a_queue_whose_tasks_are_all_purged_is_no_longer_listed(sqlite_store):
    store = sqlite_store
    await store.enqueue([new_task(queue="once")])
    [claim] = await store.claim("w", limit=1, lease=30)
    await store.finish([succeeded(claim)])
    assert await store.queues() == ["once"]
    await store.purge(time.time() + 1, ("succeeded",))
    assert await store.queues() == []


async def test_a_store_made_before_the_counts_table_gets_it_counted_on_open(tmp_path):
    path = tmp_path / "tasks.db"
    store = SQLiteStore(path)
    await store.enqueue([new_task(queue="mail"), new_task(), new_task()])
    [claim, *_] = await store.claim("w", limit=1, lease=30)
    await store.finish([succeeded(claim)])
    await store.close()
    with sqlite3.connect(path) as conn:  # as an older backbeat left it
        for trigger in ("finished", "reopened", "deleted"):
            conn.execute(f"DROP TRIGGER backbeat_counts_{trigger}")
        conn.execute("DROP TABLE backbeat_finished_counts")
        conn.execute("UPDATE backbeat_tasks SET queue = 'other' WHERE queue = 'mail'")

    reopened = SQLiteStore(path)
    try:
        counts = await reopened.counts()
        assert (counts["pending"], counts["succeeded"]) == (2, 1)
        assert await reopened.queues() == ["default", "other"]
        assert counted(path) == actual(path)
        await reopened.enqueue([new_task(queue="other")])  # the triggers are there too
        assert counted(path) == actual(path)
    finally:
        await reopened.close()
