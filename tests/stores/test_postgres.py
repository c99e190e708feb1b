"""The PostgreSQL store on its own: its URL, its schema and versions, its fencing token,
LISTEN/NOTIFY across processes' listeners, its connection budget, and a connection killed
under it. The contract suite (tests/stores/test_contract*.py) runs on it as on every store."""

import asyncio
import logging
import shutil
import tempfile
import time
import uuid

import asyncpg
import pytest

from backbeat import BackgroundTask
from backbeat.stores import StoreError, StoreMissing, StoreUnavailable, open_store
from backbeat.stores.postgres import PostgresStore
from backbeat.stores.postgres_sql import (
    CREATE_VERSION_TABLE,
    SCHEMA_VERSION,
    UPGRADES,
    VERSION_1,
    Schema,
)
from tests.apps import durable_tasks
from tests.apps.durable_tasks import mark_start_and_sleep
from tests.postgres_server import OwnPostgres, forget, fresh_schema_url
from tests.stores.rows import failed, new_task, succeeded

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def url(postgres_server):
    made = fresh_schema_url(postgres_server)
    yield made
    forget(made)


async def ask(url: str, sql: str, *arguments) -> list:
    """The rows of one statement, on a connection of the test's own."""
    conn = await asyncpg.connect(url.partition("?")[0])
    try:
        return await conn.fetch(sql, *arguments)
    finally:
        await conn.close()


async def sessions(url: str, application: str) -> list[str]:
    """What the server's sessions of this application_name ran last."""
    rows = await ask(
        url, "SELECT query FROM pg_stat_activity WHERE application_name = $1", application
    )
    return [query for (query,) in rows]


def schema_of(url: str) -> str:
    return url.rpartition("schema=")[2]


async def test_url_forms_and_the_default_schema(postgres_server):
    short = postgres_server.replace("postgresql:", "postgres:")
    assert isinstance(open_store(short), PostgresStore)
    store = open_store(postgres_server)
    assert store.schema.name == "backbeat"
    assert "@" not in repr(store) and "backbeat" in repr(store)
    with pytest.raises(StoreError, match="bad PostgreSQL schema name"):
        open_store(postgres_server + "?schema=no;drop")
    with pytest.raises(StoreError, match="bad PostgreSQL URL option"):
        open_store(postgres_server + "?pool_size=many")


async def test_open_creates_a_versioned_schema_once_whatever_the_number_of_openers(url):
    stores = [open_store(url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.open()
        await store.close()
    versions = await ask(url, f'SELECT version FROM "{schema_of(url)}".schema_version')
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_1_store_keeps_its_held_tasks_with_their_holds(url):
    """Version 1 kept a held task's hold in `lease_until`; version 2 moves it to
    `held_until`: a hold that ran out is claimable, one that did not is not."""
    schema = schema_of(url)
    conn = await asyncpg.connect(url.partition("?")[0])
    try:
        async with conn.transaction():
            await conn.execute(Schema(schema)(CREATE_VERSION_TABLE))
            await conn.execute(Schema(schema)(VERSION_1))
            await conn.execute(f'INSERT INTO "{schema}".schema_version VALUES (1, 0)')
        now = time.time()
        for task_id, hold in (("ran-out", now - 60), ("still-held", now + 600)):
            await conn.execute(
                f'INSERT INTO "{schema}".tasks (id, name, payload, state, created_at, due_at, '
                "lease_until) VALUES ($1, 'job', '{}', 'held', $2, $2, $3)",
                task_id,
                now - 120,
                hold,
            )
    finally:
        await conn.close()
    store = open_store(url)
    try:
        claimed = await store.claim("w", 10, 30)
        assert [task.id for task in claimed] == ["ran-out"]
        columns = f'SELECT id, held_until, lease_until FROM "{schema}".tasks ORDER BY id'
        rows = {row[0]: (row[1], row[2]) for row in await ask(url, columns)}
        assert rows["still-held"] == (pytest.approx(now + 600), None)
        assert rows["ran-out"][0] is None and rows["ran-out"][1] > now
        await store.activate(["still-held"])
        assert [task.id for task in await store.claim("w", 10, 30)] == ["still-held"]
    finally:
        await store.close()


async def test_a_version_3_store_keeps_its_counts_and_counts_on_once_a_statement(url):
    """Version 3 counted finished tasks row by row; version 4 once a statement. The counts a
    version 3 store holds are kept, and tasks finished, retried and deleted after the
    upgrade are counted as before, their keys kept too."""
    sql = Schema(schema_of(url))
    conn = await asyncpg.connect(url.partition("?")[0])
    try:
        async with conn.transaction():
            await conn.execute(sql(CREATE_VERSION_TABLE))
            for version in (1, 2, 3):
                await conn.execute(sql(UPGRADES[version]))
                await conn.execute(sql("INSERT INTO {s}.schema_version VALUES ($1, 0)"), version)
        now = time.time()
        for n in range(3):
            await conn.execute(
                sql(
                    "INSERT INTO {s}.tasks (id, name, payload, state, created_at, due_at) "
                    "VALUES ($1, 'job', '{}', 'running', $2, $2)"
                ),
                f"old-{n}",
                now,
            )
        await conn.execute(sql("UPDATE {s}.tasks SET state = 'succeeded', finished_at = $1"), now)
    finally:
        await conn.close()
    store = open_store(url)
    try:
        assert (await store.counts())["succeeded"] == 3
        keyed = new_task(key="once")
        doomed = new_task(retries=0)
        await store.enqueue([keyed, doomed, new_task()])
        claims = {task.id: task for task in await store.claim("w", 10, 30)}
        assert len(claims) == 3
        await store.finish([succeeded(claims[keyed.id]), failed(claims[doomed.id])])
        other = next(
            task for task_id, task in claims.items() if task_id not in (keyed.id, doomed.id)
        )
        await store.finish([succeeded(other)])
        counts = await store.counts()
        assert (counts["succeeded"], counts["failed"]) == (5, 1)
        spent = await ask(url, sql("SELECT key, task_id FROM {s}.spent_keys"))
        assert [tuple(row) for row in spent] == [("once", keyed.id)]
        assert await store.retry([doomed.id]) == 1
        counts = await store.counts()
        assert (counts["failed"], counts["pending"]) == (0, 1)
        await store.purge(time.time() + 1, ("succeeded",))
        assert (await store.counts())["succeeded"] == 0
    finally:
        await store.close()


async def test_a_missing_store_is_not_created_for_readers_and_a_newer_one_is_refused(url):
    with pytest.raises(StoreMissing):
        await open_store(url, create=False).open()
    store = open_store(url)
    await store.open()
    await store.close()
    newer = f'INSERT INTO "{schema_of(url)}".schema_version VALUES ($1, 0)'
    await ask(url, newer, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="made by a newer backbeat"):
        await open_store(url).open()


async def test_unreachable_is_unavailable_quickly():
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.enqueue([new_task()])
    assert time.monotonic() - started < 2


async def test_the_token_fences_a_released_claim_whose_attempt_number_came_back(url):
    store = open_store(url)
    task = new_task()
    await store.enqueue([task])
    [first] = await store.claim("w1", 1, 30)
    await store.release([first.receipt])  # the attempt is given back: attempts is 0 again
    [second] = await store.claim("w2", 1, 30)
    assert (first.attempts, second.attempts) == (1, 1)
    assert first.receipt != second.receipt
    assert await store.finish([succeeded(first)]) == [False]
    assert await store.progress(first.receipt, "{}") is False
    assert await store.finish([succeeded(second)]) == [True]
    await store.close()


async def test_a_taken_over_workers_outcome_is_refused_before_anyone_claims_again(url):
    store = open_store(url)
    await store.enqueue([new_task()])
    [claim] = await store.claim("dead", 1, 30)
    assert await store.take_over("dead") == [claim.id]
    assert await store.renew([claim.receipt], 30) == [claim.id]
    assert await store.finish([succeeded(claim)]) == [False]
    await store.close()


async def woken_by_a_write(waiting, writer) -> None:
    """`waiting` wakes at once when `writer` enqueues (not at its 5 s timeout); both closed."""
    started = time.monotonic()
    await writer.enqueue([new_task()])
    await waiting.wait(5)
    assert time.monotonic() - started < 1.0
    await waiting.close()
    await writer.close()


async def test_a_write_elsewhere_wakes_a_waiting_store_through_notify(url):
    # Another application_name: another listener and another in-process signal, as another
    # process would have; only PostgreSQL's NOTIFY reaches it.
    waiting = open_store(url + "&application_name=waiting")
    writer = open_store(url)
    await writer.open()
    await waiting.wait(0)  # listening from now on
    await woken_by_a_write(waiting, writer)


async def test_a_terminated_listener_listens_again_by_itself(url):
    name = f"listener-{uuid.uuid4().hex[:8]}"
    waiting = open_store(f"{url}&application_name={name}")
    writer = open_store(url)
    await waiting.wait(0)
    [(killed,)] = await ask(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        name,
    )
    assert killed == 1
    await waiting.wait(0.5)  # woken by the loss (it may have missed something), or the timeout
    await waiting.wait(0)  # listening again
    await woken_by_a_write(waiting, writer)


async def test_behind_pgbouncer_a_store_polls_and_listens_on_no_connection(url):
    name = f"pooled-{uuid.uuid4().hex[:8]}"
    waiting = open_store(f"{url}&pgbouncer=yes&application_name={name}")
    writer = open_store(url)
    await waiting.wait(0)
    started = time.monotonic()
    await writer.enqueue([new_task()])
    await waiting.wait(0.3)
    assert time.monotonic() - started >= 0.25  # no notification reaches it: its poll does
    assert (await waiting.counts())["pending"] == 1
    queries = await sessions(url, name)
    assert queries and not [query for query in queries if query.startswith("LISTEN")]
    await waiting.close()
    await writer.close()


async def test_no_connection_is_held_while_tasks_run(url, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKBEAT_TEST_OUT", str(tmp_path / "marks.txt"))
    (tmp_path / "marks.txt").touch()
    name = f"budget-{uuid.uuid4().hex[:8]}"
    runner = durable_tasks.runner(f"{url}&pool_size=2&application_name={name}", concurrency=8)
    async with runner:
        for n in range(8):
            await runner.asubmit(BackgroundTask(mark_start_and_sleep, 1.0, f"t{n}"))
        while (tmp_path / "marks.txt").read_text().count("start:") < 8:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        connections = len(await sessions(url, name))
        await runner.join(timeout=10)
    lines = (tmp_path / "marks.txt").read_text().splitlines()
    starts = [float(line.split()[2]) for line in lines if line.startswith("start:")]
    ends = [float(line.split()[2]) for line in lines if not line.startswith("start:")]
    assert len(ends) == 8 and max(starts) < min(ends)  # all eight ran at once
    # The worker's pool and its lease keeper's (two each at most), and one listener.
    assert connections <= 5


@pytest.mark.process
async def test_a_kill_9_of_postgresql_loses_no_committed_task_and_the_store_comes_back(caplog):
    # Not under pytest's tmp_path: the postgres user must reach its cluster's directory.
    directory = tempfile.mkdtemp(prefix="backbeat-postgres-")
    server = OwnPostgres(directory).start()
    store = open_store(fresh_schema_url(server.url))
    caplog.set_level(logging.WARNING)
    try:
        tasks = [new_task() for _ in range(50)]
        await store.enqueue(tasks)
        server.kill()
        with pytest.raises(StoreUnavailable):
            await store.enqueue([new_task()])
        server.start()
        # The same store object, never reopened: its pool connects again.
        deadline = time.monotonic() + 10
        while True:
            try:
                counts = await store.counts()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert counts["pending"] == 50
        claimed = await store.claim("w", 100, 30)
        assert sorted(c.id for c in claimed) == sorted(t.id for t in tasks)
        # Said once when lost and once when back: no traceback (asyncpg's pool reconnecting
        # in the background logged one per try), however many calls failed meanwhile.
        lines = [(r.name, r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
        assert [line[:2] for line in lines] == [("backbeat", "WARNING")] * 2, lines
        lost, back = (message for _, _, message, _ in lines)
        assert f"{store!r} cannot be reached" in lost and f"{store!r} answers again" in back
        assert not [exc_info for *_, exc_info in lines if exc_info]
    finally:
        await store.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_claimers_in_many_pools_at_once_take_each_task_once(url):
    stores = [open_store(url) for _ in range(4)]
    tasks = [new_task(priority=n % 3) for n in range(200)]
    await stores[0].enqueue(tasks)

    async def drain(store, worker):
        taken = []
        while batch := await store.claim(worker, 7, 30):
            taken += [claim.id for claim in batch]
        return taken

    taken = await asyncio.gather(*(drain(store, f"w{n}") for n, store in enumerate(stores)))
    every = [task_id for ids in taken for task_id in ids]
    assert sorted(every) == sorted(task.id for task in tasks)  # each once, none left
    for store in stores:
        await store.close()


async def test_one_key_from_many_writers_at_once_makes_one_task(url):
    stores = [open_store(url) for _ in range(4)]
    writes = [new_task(key="invoice:42") for _ in range(4)]
    ids = await asyncio.gather(*(s.enqueue([w]) for s, w in zip(stores, writes, strict=True)))
    assert len({task_id for [task_id] in ids}) == 1
    assert (await stores[0].counts())["pending"] == 1
    for store in stores:
        await store.close()


async def test_a_gate_another_claim_is_counting_is_left_to_it(url):
    # Two queues share one concurrency key: two lines, one gate. Lines are locked one by one,
    # so a claim also locks the gate itself while it counts and starts: a claim in another
    # process (here: a transaction holding that lock) makes this one leave the gate alone.
    store = open_store(url)
    keyed = [new_task(queue=f"q{n % 2}", concurrency_gate="c", max_concurrency=3) for n in range(6)]
    await store.enqueue(keyed)
    other = await asyncpg.connect(url.partition("?")[0])
    try:
        async with other.transaction():
            await other.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('backbeat gate ' || $1, 0))", "c"
            )
            assert await store.claim("w", 10, 30) == []
        assert len(await store.claim("w", 10, 30)) == 3
        assert await store.claim("w", 10, 30) == []
    finally:
        await other.close()
        await store.close()


async def test_a_warm_up_opens_ready_connections_and_changes_nothing(url):
    """`warm_up` runs the claim and the outcome statement on connections of their own, for
    no task: a pending task stays pending, a running one keeps its lease and token."""
    store = open_store(url)
    try:
        waiting, running = new_task(), new_task()
        await store.enqueue([running])
        [claim] = await store.claim("w", 1, 30)
        await store.enqueue([waiting])
        before = await ask(
            url, f'SELECT id, state, token, lease_until FROM "{schema_of(url)}".tasks'
        )
        await store.warm_up(None)
        await store.warm_up(("default",))
        after = await ask(
            url, f'SELECT id, state, token, lease_until FROM "{schema_of(url)}".tasks'
        )
        assert sorted(map(tuple, after)) == sorted(map(tuple, before))
        assert (await store.counts())["pending"] == 1
        pool = await store._db.pool()
        assert pool.get_size() >= 2
        assert await store.finish([succeeded(claim)]) == [True]
    finally:
        await store.close()
