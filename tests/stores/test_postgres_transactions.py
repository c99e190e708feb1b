"""Enqueue in the app's own PostgreSQL transaction (`runner.asubmit(task, connection=...)`),
with each driver an app holds: asyncpg, psycopg, SQLAlchemy's async engine on either. The
task is written with the app's rows: there, and a waiting worker woken, when they commit;
never there when they roll back; a key a live task holds leaves the transaction usable."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from backbeat import BackgroundTask, Runner
from backbeat.stores import DuplicateTask
from backbeat.stores.postgres import PostgresStore
from tests.postgres_server import forget, fresh_schema_url
from tests.stores.rows import new_task

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

ran: list[str] = []


async def note(label: str) -> None:
    ran.append(label)


class RolledBack(Exception):
    """Raised in a transaction to roll it back."""


# Each driver: a transaction opened on a connection of its own, as an app opens one, and
# how the app runs a statement of its own in it. The transaction commits at the end of the
# block, and rolls back if it raises.


@contextlib.asynccontextmanager
async def with_asyncpg(dsn: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def with_psycopg(dsn: str) -> AsyncIterator[Any]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        yield conn


def with_sqlalchemy(driver: str, session: bool) -> Callable[[str], Any]:
    @contextlib.asynccontextmanager
    async def opened(dsn: str) -> AsyncIterator[Any]:
        engine = create_async_engine(dsn.replace("postgresql://", f"postgresql+{driver}://"))
        try:
            if session:
                async with AsyncSession(engine) as made, made.begin():
                    yield made
            else:
                async with engine.connect() as conn, conn.begin():
                    yield conn
        finally:
            await engine.dispose()

    return opened


async def run_asyncpg(conn: Any, sql: str) -> object:
    return await conn.execute(sql)


async def run_psycopg(conn: Any, sql: str) -> object:
    return await conn.execute(sql)


async def run_sqlalchemy(conn: Any, sql: str) -> object:
    return await conn.execute(text(sql))


DRIVERS = {
    "asyncpg": (with_asyncpg, run_asyncpg),
    "psycopg": (with_psycopg, run_psycopg),
    "sqlalchemy-asyncpg-connection": (with_sqlalchemy("asyncpg", False), run_sqlalchemy),
    "sqlalchemy-asyncpg-session": (with_sqlalchemy("asyncpg", True), run_sqlalchemy),
    "sqlalchemy-psycopg-connection": (with_sqlalchemy("psycopg", False), run_sqlalchemy),
    "sqlalchemy-psycopg-session": (with_sqlalchemy("psycopg", True), run_sqlalchemy),
}


@pytest.fixture(params=list(DRIVERS))
def driver(request):
    return DRIVERS[request.param]


@pytest.fixture
def url(postgres_server):
    made = fresh_schema_url(postgres_server)
    yield made
    forget(made)


def dsn_of(url: str) -> str:
    return url.partition("?")[0]


def schema_of(url: str) -> str:
    return url.rpartition("schema=")[2]


async def ask(url: str, sql: str) -> list:
    conn = await asyncpg.connect(dsn_of(url))
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def listening_worker(url: str) -> AsyncIterator[Runner]:
    """A runner that executes, polling only every 30 s: a task it runs within seconds of
    a commit was woken by the commit's NOTIFY. Yielded once its listener listens."""
    name = f"tx-{uuid.uuid4().hex[:8]}"
    runner = Runner(store=f"{url}&application_name={name}", poll_interval=30)
    runner.register(note)
    async with runner:
        assert await runner.wait_connected(10)
        await until(lambda: listening(url, name), "the worker to LISTEN")
        yield runner


async def listening(url: str, application: str) -> bool:
    rows = await ask(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = "
        f"'{application}' AND query LIKE 'LISTEN%'",
    )
    return bool(rows)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 5
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def succeeded(runner: Runner, task_id: str) -> bool:
    found = await runner.aget(task_id)
    return found is not None and found.state == "succeeded"


@pytest.fixture
async def orders(url):
    """The app's own table, in the store's schema."""
    table = f'"{schema_of(url)}".orders'
    store = PostgresStore(url)
    await store.open()  # the schema
    await store.close()
    await ask(url, f"CREATE TABLE {table} (id text PRIMARY KEY)")
    return table


async def test_a_committed_task_runs_woken_at_commit(url, driver, orders):
    opened, run = driver
    label = f"committed-{uuid.uuid4().hex[:6]}"
    async with listening_worker(url) as runner:
        async with opened(dsn_of(url)) as conn:
            await run(conn, f"INSERT INTO {orders} VALUES ('order-1')")
            task_id = await runner.asubmit(BackgroundTask(note, label), connection=conn)
            assert await runner.aget(task_id) is None  # not before the commit
            committed_at = time.monotonic()
        await until(lambda: succeeded(runner, task_id), "the task to run")
        assert time.monotonic() - committed_at < 5  # woken, not found by a 30 s poll
        assert label in ran
    assert await ask(url, f"SELECT id FROM {orders}") == [("order-1",)]


async def test_a_rolled_back_task_never_existed(url, driver, orders):
    opened, run = driver
    gone, after = f"gone-{uuid.uuid4().hex[:6]}", f"after-{uuid.uuid4().hex[:6]}"
    async with listening_worker(url) as runner:
        with pytest.raises(RolledBack):
            async with opened(dsn_of(url)) as conn:
                await run(conn, f"INSERT INTO {orders} VALUES ('order-2')")
                task_id = await runner.asubmit(BackgroundTask(note, gone), connection=conn)
                raise RolledBack
        # A task committed afterwards runs: the worker had every chance to run the other.
        async with opened(dsn_of(url)) as conn:
            later = await runner.asubmit(BackgroundTask(note, after), connection=conn)
        await until(lambda: succeeded(runner, later), "the committed task to run")
        assert after in ran and gone not in ran
        assert await runner.aget(task_id) is None
        assert sum((await runner.store.counts()).values()) == 1
    assert await ask(url, f"SELECT id FROM {orders}") == []


async def test_a_key_a_live_task_holds_leaves_the_transaction_usable(url, driver, orders):
    opened, run = driver
    runner = Runner(store=url, execute=False)
    runner.register(note)
    async with runner:
        first = await runner.asubmit(BackgroundTask(note, "one").using(key="order-3"))
        async with opened(dsn_of(url)) as conn:
            await run(conn, f"INSERT INTO {orders} VALUES ('order-3')")
            again = BackgroundTask(note, "two").using(key="order-3")
            assert await runner.asubmit(again, connection=conn) == first
            await run(conn, f"INSERT INTO {orders} VALUES ('order-3b')")  # not aborted
        assert (await runner.store.counts())["pending"] == 1
    assert await ask(url, f"SELECT id FROM {orders} ORDER BY id") == [("order-3",), ("order-3b",)]


async def test_an_id_that_exists_is_a_duplicate_task(url, driver):
    opened, _ = driver
    store = PostgresStore(url)
    task = new_task()
    await store.enqueue([task])
    with pytest.raises(DuplicateTask, match=task.id):
        async with opened(dsn_of(url)) as conn:
            await store.enqueue_on(conn, [task])
    await store.close()


async def test_a_blocking_psycopg_connection_writes_in_its_transaction(url):
    runner = Runner(store=url, execute=False)
    runner.register(note)

    def write(commit: bool) -> str:
        with psycopg.connect(dsn_of(url)) as conn:
            task_id = runner.submit(BackgroundTask(note, "blocking"), connection=conn)
            conn.commit() if commit else conn.rollback()
            return task_id

    kept = await asyncio.to_thread(write, True)
    dropped = await asyncio.to_thread(write, False)
    assert (await runner.aget(kept)).state == "pending"
    assert await runner.aget(dropped) is None
    await runner.store.close()


async def test_what_cannot_write_in_the_transaction_is_refused_before_writing(url, tmp_path):
    runner = Runner(store=url, execute=False)
    runner.register(note)
    task = BackgroundTask(note, "refused")
    conn = await asyncpg.connect(dsn_of(url))
    try:
        with pytest.raises(ValueError, match="no transaction"):
            await runner.asubmit(task, connection=conn)  # each statement would commit
        with pytest.raises(TypeError, match="not str"):
            await runner.asubmit(task, connection="postgresql://")
        async with conn.transaction():
            with pytest.raises(TypeError, match="not in your database"):
                await Runner(store=f"sqlite:///{tmp_path}/t.db").asubmit(task, connection=conn)
            with pytest.raises(TypeError, match="has no store"):
                await Runner().asubmit(task, connection=conn)
    finally:
        await conn.close()
    async with await psycopg.AsyncConnection.connect(dsn_of(url), autocommit=True) as auto:
        with pytest.raises(ValueError, match="autocommit"):
            await runner.asubmit(task, connection=auto)
        with pytest.raises(TypeError, match="an async connection: await runner"):
            runner.submit(task, connection=auto)
    with (
        psycopg.connect(dsn_of(url)) as blocking,
        pytest.raises(TypeError, match="a blocking connection: pass it to runner"),
    ):
        await runner.asubmit(task, connection=blocking)
    assert sum((await runner.store.counts()).values()) == 0
    await runner.store.close()
