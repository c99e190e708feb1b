"""The PostgreSQL store's writes that race the upkeep's move of finished tasks from `tasks`
to `finished` (`backbeat.stores.postgres_maintenance`): a retry of a dead-lettered task and
a progress report landing after the attempt's outcome find the task in either table.

Each race is forced, not hoped for: the move runs on a connection of the test's own, in a
transaction held open (the rows it moved locked, copied, deleted, nothing committed), the
racing call starts and is seen waiting on that transaction's locks, then the move commits.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backbeat.stores import open_store
from backbeat.stores.postgres_maintenance import BATCH, DELETE_MOVED, MOVE
from backbeat.stores.postgres_sql import Schema
from tests.postgres_server import forget, fresh_schema_url
from tests.stores.rows import failed, new_task, succeeded
from tests.stores.test_postgres import ask, schema_of

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def store(postgres_server):
    url = fresh_schema_url(postgres_server)
    opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()
    forget(url)


@contextlib.asynccontextmanager
async def moving(url: str) -> AsyncIterator[tuple[list[str], int]]:
    """The upkeep's move of every finished task, as its leader runs it, in a transaction
    left open until the block ends (then committed): the ids moved, and the server pid of
    the connection that holds their locks."""
    sql = Schema(schema_of(url))
    conn = await asyncpg.connect(url.partition("?")[0])
    try:
        async with conn.transaction():
            moved = [task_id for (task_id,) in await conn.fetch(sql(MOVE), time.time(), BATCH)]
            await conn.execute(sql(DELETE_MOVED), moved)
            yield moved, conn.get_server_pid()
    finally:
        await conn.close()


async def wait_blocked_by(url: str, holder: int) -> None:
    """Until a session waits on a lock `holder` has."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
    deadline = time.monotonic() + 10
    while (await ask(url, query, holder))[0][0] == 0:
        assert time.monotonic() < deadline, "no session waited on the move's locks"
        await asyncio.sleep(0.02)


async def in_table(url: str, table: str) -> list[str]:
    rows = await ask(url, f'SELECT id FROM "{schema_of(url)}".{table} ORDER BY id')
    return [task_id for (task_id,) in rows]


async def dead_letter(store) -> str:
    task = new_task()
    await store.enqueue([task])
    [claim] = await store.claim("w", 1, 30)
    await store.finish([failed(claim, "ValueError: no")])
    return task.id


@pytest.mark.parametrize("by_id", [True, False], ids=["by-id", "all"])
async def test_a_retry_waiting_on_the_move_finds_the_task_in_finished(store, by_id):
    """The move holds the failed task (copied to `finished`, not committed); the retry waits
    on it, the move commits: the task is requeued all the same (it used to count 0, the task
    left failed in `finished`)."""
    task_id = await dead_letter(store)
    async with moving(store.url) as (moved, holder):
        assert moved == [task_id]
        retry = asyncio.create_task(store.retry([task_id] if by_id else None))
        await wait_blocked_by(store.url, holder)
    assert await retry == 1
    assert await in_table(store.url, "tasks") == [task_id]
    assert await in_table(store.url, "finished") == []
    assert (await store.get(task_id)).state == "pending"
    [again] = await store.claim("w", 1, 30)
    assert again.id == task_id


async def test_a_progress_report_landing_after_the_move_is_kept(store):
    """The last report of an attempt may land after its outcome (reports and outcomes are
    written in separate batches), so after the upkeep moved the task too: kept on the task in
    `finished`, whether it waited on the move or came after it (it used to be dropped, the
    finished task showing an older report for good)."""
    task = new_task()
    await store.enqueue([task])
    [claim] = await store.claim("w", 1, 30)
    assert await store.progress(claim.receipt, '{"fraction": 0.9}') is True
    await store.finish([succeeded(claim, '"ok"')])
    async with moving(store.url) as (moved, holder):
        assert moved == [task.id]
        report = asyncio.create_task(store.progress(claim.receipt, '{"fraction": 1}'))
        await wait_blocked_by(store.url, holder)
    assert await report is True
    assert (await store.get(task.id)).progress == '{"fraction": 1}'
    assert await store.progress(claim.receipt, '{"fraction": 1, "note": "late"}') is True
    assert (await store.get(task.id)).progress == '{"fraction": 1, "note": "late"}'
    assert await store.progress(task.id + ":7", '{"fraction": 0}') is False  # another attempt's
    assert await in_table(store.url, "finished") == [task.id]
