"""The PostgreSQL store's upkeep (`backbeat.stores.postgres_maintenance`): finished tasks
leave the hot table and are still read, one process at a time does it (a lease row), keys
outlive it for the store's `key_window`, and the hot table is back near its first size
after a burst, whatever the number of tasks that ran through it (its indexes rebuilt at
most once per `COMPACT_EVERY`, on an injected clock), what a cut off rebuild left dropped."""

import asyncio
import time

import asyncpg
import pytest

from backbeat.stores import open_store
from backbeat.stores.base import WorkerInfo
from backbeat.stores.inspection import TaskFilter
from backbeat.stores.postgres_maintenance import COMPACT_EVERY, Upkeep
from tests.postgres_server import forget, fresh_schema_url
from tests.stores.rows import failed, new_task, succeeded
from tests.stores.test_postgres import ask, schema_of

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def url(postgres_server):
    made = fresh_schema_url(postgres_server)
    yield made
    forget(made)


async def in_table(url: str, table: str) -> list[str]:
    rows = await ask(url, f'SELECT id FROM "{schema_of(url)}".{table} ORDER BY id')
    return [task_id for (task_id,) in rows]


async def hot_size(url: str) -> int:
    """The hot table with its indexes and TOAST, in bytes."""
    [(size,)] = await ask(url, f"SELECT pg_total_relation_size('\"{schema_of(url)}\".tasks')")
    return int(size)


def worker(name: str) -> WorkerInfo:
    return WorkerInfo(name, "host", 1, None, 1, 0, time.time())


async def test_finished_tasks_leave_the_hot_table_and_are_still_read(url):
    store = open_store(url)
    done, broken, waiting = new_task(), new_task(name="pdf.render"), new_task()
    await store.enqueue([done, broken, waiting])
    claims = {c.id: c for c in await store.claim("w", 2, 30)}
    assert set(claims) == {done.id, broken.id}
    await store.finish([succeeded(claims[done.id], '"ok"')])
    await store.finish([failed(claims[broken.id], "ValueError: no", "Traceback ...")])
    counts = await store.counts()
    assert await store.upkeep("w") == 2
    assert await in_table(url, "tasks") == [waiting.id]  # live tasks only
    assert await in_table(url, "finished") == sorted([done.id, broken.id])
    assert await store.counts() == counts
    assert (await store.get(done.id)).result == '"ok"'
    assert [t.id for t in await store.list_tasks(state="failed")] == [broken.id]
    page = await store.search(TaskFilter(error="no"))
    assert [t.id for t in page.tasks] == [broken.id]
    [group] = await store.failure_groups()
    assert (group.name, group.latest_id) == ("pdf.render", broken.id)
    [attempt] = await store.attempts(broken.id)
    assert attempt.outcome == "failed"
    # Retried: back in the hot table, its attempts kept, and claimed again.
    assert await store.retry([broken.id]) == 1
    assert await in_table(url, "finished") == [done.id]
    again = {c.id: c for c in await store.claim("w", 10, 30)}[broken.id]
    assert len(await store.attempts(broken.id)) == 1
    # Purged or deleted in either table, and counted off once.
    await store.finish([succeeded(again)])
    assert await store.purge(time.time() + 1, ("succeeded",), dry_run=True) == 2
    assert await store.purge(time.time() + 1, ("succeeded",)) == 2
    assert (await store.counts())["succeeded"] == 0
    assert await store.get(done.id) is None
    await store.close()


async def test_one_holder_of_the_lease_at_a_time_and_the_next_when_it_stops(url):
    first, second = open_store(url), open_store(url)
    await first.enqueue([new_task()])
    [claim] = await first.claim("w", 1, 30)
    await first.finish([succeeded(claim)])
    assert await second.upkeep("second") == 1
    assert await first.upkeep("first") is None  # the lease is the second's
    assert await second.upkeep("second") == 0  # kept by its holder
    await second.heartbeat(worker("second"), 0)  # a worker that stops gives it up
    assert await first.upkeep("first") == 0
    # A worker's heartbeat runs the steps: a finished task leaves the hot table by itself.
    await first.enqueue([new_task()])
    [claim] = await first.claim("w", 1, 30)
    await first.finish([succeeded(claim)])
    deadline = time.monotonic() + 5
    while await in_table(url, "tasks"):
        assert time.monotonic() < deadline
        await first.heartbeat(worker("first"), 10)
        await asyncio.sleep(0.05)
    await first.close()
    await second.close()


async def test_a_key_answers_its_finished_task_for_the_key_window_after_the_upkeep(url):
    store = open_store(url + "&key_window=60")
    plain = open_store(url)  # no window: the key is free once its task finished
    task = new_task(key="invoice:42")
    await store.enqueue([task])
    [claim] = await store.claim("w", 1, 30)
    await store.finish([succeeded(claim)])
    assert await store.enqueue([new_task(key="invoice:42")]) == [task.id]
    await store.upkeep("w")
    await store.purge(time.time() + 1, ("succeeded",))
    assert await store.get(task.id) is None
    assert await store.enqueue([new_task(key="invoice:42")]) == [task.id]  # outlived both
    other = new_task(key="invoice:42")
    assert await plain.enqueue([other]) == [other.id]
    await store.close()
    await plain.close()


async def run_through(store, count: int, upkeep: bool = True) -> None:
    """`count` tasks enqueued at once (a burst: the hot table's peak), then claimed and
    finished 500 at a time, with an upkeep step after each 500 (the step that ends the
    burst is the caller's)."""
    for first in range(0, count, 5000):
        await store.enqueue([new_task() for _ in range(min(count - first, 5000))])
    for _ in range(count // 500):
        claims = await store.claim("w", 500, 30)
        assert await store.finish([succeeded(c) for c in claims]) == [True] * 500
        if upkeep:
            assert await store.upkeep("w") == 500


async def settled(upkeep: Upkeep) -> None:
    """Once the compaction this upkeep started (in a thread of its own), if any, is over."""
    deadline = time.monotonic() + 60
    while upkeep.compacting():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_after_a_burst_the_hot_table_is_back_near_its_first_size(url, postgres_server):
    kept = fresh_schema_url(postgres_server)  # the same tasks, finished ones left in it
    now = 1000.0
    store, other = open_store(url), open_store(kept)
    upkeep = store._upkeep = Upkeep(clock=lambda: now)
    try:
        await run_through(store, 500)
        started = await hot_size(url)  # as the first 500 left it, moved out
        await run_through(store, 9_500)
        assert await store.upkeep("w") == 0  # the burst is over: vacuumed, compacted
        await settled(upkeep)
        assert upkeep.compactions == 1
        assert await in_table(url, "tasks") == []
        assert len(await in_table(url, "finished")) == 10_000
        compacted = await hot_size(url)
        await run_through(other, 10_000, upkeep=False)
        # Twenty times as many tasks later: near its first size (its indexes rebuilt), a
        # small part of what they take when they stay.
        assert compacted <= min(2 * started, await hot_size(kept) / 20)
        # The next burst within COMPACT_EVERY (of the store: whichever process compacted)
        # is vacuumed only: its indexes keep their peak's size, till the one after.
        await run_through(store, 10_000)
        assert await store.upkeep("w") == 0
        assert not upkeep.compacting() and upkeep.compactions == 1
        assert await hot_size(url) > 4 * compacted
        now += COMPACT_EVERY
        await run_through(store, 500)
        assert await store.upkeep("w") == 0
        await settled(upkeep)
        assert upkeep.compactions == 2
        assert await hot_size(url) <= 2 * started
    finally:
        await store.close()
        await other.close()
        forget(kept)


async def test_a_compaction_drops_what_a_cut_off_rebuild_left(url):
    # REINDEX CONCURRENTLY cut off (timed out, its connection lost) leaves its new index,
    # invalid, named *_ccnew: a failed concurrent build stands in for it here.
    store = open_store(url)
    upkeep = store._upkeep = Upkeep()
    schema = schema_of(url)
    await store.enqueue([new_task(), new_task()])  # one name: the unique build fails
    with pytest.raises(asyncpg.UniqueViolationError):
        await ask(
            url, f'CREATE UNIQUE INDEX CONCURRENTLY tasks_claim_ccnew ON "{schema}".tasks (name)'
        )
    left = (
        "SELECT indisvalid FROM pg_index "
        f"WHERE indexrelid = to_regclass('\"{schema}\".tasks_claim_ccnew')"
    )
    assert await ask(url, left) == [(False,)]
    await run_through(store, 500)
    assert await store.upkeep("w") == 0
    await settled(upkeep)
    assert upkeep.compactions == 1
    assert await ask(url, left) == []
    await store.close()
