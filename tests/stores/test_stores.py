"""The store interface, on both stores (SQLite on real files, and in memory);
then what is SQLite's own."""

import asyncio
import stat
import time

import pytest

from backbeat.ids import new_id
from backbeat.status import TaskState
from backbeat.stores import MemoryStore, NewTask, SQLiteStore, StoreError, open_store
from backbeat.stores.base import ClaimedTask, Settlement
from backbeat.stores.sqlite import path_from_url

pytestmark = pytest.mark.anyio


def new_task(name: str = "emails.send", due_in: float = 0.0, **policy) -> NewTask:
    now = time.time()
    return NewTask(
        id=new_id(),
        name=name,
        payload='{"args": ["hi"], "kwargs": {}}',
        created_at=now,
        due_at=now + due_in,
        **policy,
    )


def succeeded(claim: ClaimedTask, result: str | None = None) -> Settlement:
    return Settlement(claim.receipt, TaskState.SUCCEEDED, result=result)


def failed(
    claim: ClaimedTask, error: str = "boom", trace: str | None = None, retry_at: float | None = None
) -> Settlement:
    state = TaskState.FAILED if retry_at is None else TaskState.SCHEDULED
    return Settlement(claim.receipt, state, error=error, traceback=trace, retry_at=retry_at)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db") if request.param == "sqlite" else MemoryStore()
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db")
    yield opened
    await opened.close()


async def test_enqueue_then_get_and_counts(store):
    task = new_task(retries=2, timeout=5.0)
    later = new_task(due_in=60)
    await store.enqueue([task, later])
    status = await store.get(task.id)
    assert (status.id, status.name, status.state, status.attempts) == (
        task.id,
        "emails.send",
        "pending",
        0,
    )
    assert status.info(time.time()).state == "pending"
    assert (await store.get(later.id)).info(time.time()).state == "scheduled"
    assert await store.get("nope") is None
    counts = await store.counts()
    assert (counts["pending"], counts["scheduled"], counts["running"]) == (1, 1, 0)


async def test_the_file_is_in_wal_mode_and_shared_with_other_connections(sqlite_store, tmp_path):
    store = sqlite_store
    await store.enqueue([new_task()])
    other = SQLiteStore(tmp_path / "tasks.db")
    try:
        assert other.counts_sync()["pending"] == 1
        mode = other.file.connection().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        other.close_sync()


async def test_claim_takes_due_tasks_once_with_a_lease(store):
    ready, later = new_task(retries=3, backoff=0.5), new_task(due_in=60)
    await store.enqueue([ready, later])
    [claimed] = await store.claim("w1", limit=10, lease=30)
    assert (claimed.id, claimed.attempts, claimed.retries, claimed.backoff) == (ready.id, 1, 3, 0.5)
    assert claimed.payload == ready.payload
    assert await store.claim("w2", limit=10, lease=30) == []
    assert (await store.get(ready.id)).state == "running"


async def test_an_expired_lease_is_claimed_again_and_the_old_holder_loses_it(store):
    task = new_task()
    await store.enqueue([task])
    [first] = await store.claim("dead-worker", limit=1, lease=0.05)
    await asyncio.sleep(0.1)
    [again] = await store.claim("w2", limit=1, lease=30)
    assert (again.id, again.attempts) == (task.id, 2)
    assert again.receipt != first.receipt
    # The first claim is fenced off: its outcome is refused, the current owner's stands.
    assert await store.finish([failed(first, "stale")]) == [False]
    assert await store.renew([first.receipt], lease=30) == [task.id]
    assert await store.finish([succeeded(again, '"done"')]) == [True]
    status = await store.get(task.id)
    assert (status.state, status.error, status.info(time.time()).result) == (
        "succeeded",
        None,
        "done",
    )


async def test_the_same_worker_claiming_its_own_expired_task_is_fenced_too(store):
    task = new_task()
    await store.enqueue([task])
    [first] = await store.claim("w1", limit=1, lease=0.05)
    await asyncio.sleep(0.1)
    [second] = await store.claim("w1", limit=1, lease=30)
    assert await store.finish([succeeded(first)]) == [False]
    assert await store.finish([succeeded(second)]) == [True]


async def test_finish_settles_a_batch_in_one_write_with_results(store):
    tasks = [new_task(retries=1) for _ in range(3)]
    await store.enqueue(tasks)
    claims = {c.id: c for c in await store.claim("w", 3, 30)}
    a, b, c = (claims[t.id] for t in tasks)
    later = time.time() + 60
    kept = await store.finish(
        [succeeded(a, '{"n": 1}'), failed(b, "E: x", "tb"), failed(c, retry_at=later)]
    )
    assert kept == [True, True, True]
    now = time.time()
    states = [(await store.get(t.id)).info(now) for t in tasks]
    assert [(i.state, i.result, i.error) for i in states] == [
        ("succeeded", {"n": 1}, None),
        ("failed", None, "E: x"),
        ("scheduled", None, "boom"),
    ]


async def test_renewing_keeps_a_long_task_from_being_claimed_twice(store):
    task = new_task()
    await store.enqueue([task])
    [claimed] = await store.claim("w1", limit=1, lease=0.1)
    for _ in range(3):
        await asyncio.sleep(0.05)
        assert await store.renew([claimed.receipt], lease=0.1) == []
        assert await store.claim("w2", limit=1, lease=0.1) == []


async def test_a_failed_attempt_is_retried_later_or_dead_lettered(store):
    task = new_task(retries=1)
    await store.enqueue([task])
    [claimed] = await store.claim("w1", 1, 30)
    retry = failed(claimed, "ValueError: one", "Traceback…", retry_at=time.time() + 0.1)
    assert await store.finish([retry]) == [True]
    status = await store.get(task.id)
    assert (status.info(time.time()).state, status.error) == ("scheduled", "ValueError: one")
    assert await store.claim("w1", 1, 30) == []
    await asyncio.sleep(0.15)
    [claimed] = await store.claim("w1", 1, 30)
    assert claimed.attempts == 2
    assert await store.finish([failed(claimed, "ValueError: two", "Traceback (most recent…")])
    dead = await store.get(task.id)
    assert (dead.state, dead.attempts, dead.error) == ("failed", 2, "ValueError: two")
    assert dead.traceback.startswith("Traceback")
    assert [f.id for f in await store.list_tasks(state="failed")] == [task.id]


async def test_retry_brings_dead_letters_back(store):
    first, second = new_task(), new_task()
    await store.enqueue([first, second])
    for _ in range(2):
        [claimed] = await store.claim("w", 1, 30)
        await store.finish([failed(claimed)])
    assert await store.retry([first.id]) == 1
    assert (await store.get(first.id)).state == "pending"
    assert (await store.get(first.id)).attempts == 0
    assert await store.retry(None) == 1
    assert (await store.counts())["failed"] == 0


async def test_release_gives_tasks_back_without_burning_the_attempt(store):
    task = new_task()
    await store.enqueue([task])
    [claimed] = await store.claim("w1", 1, 30)
    await store.release([claimed.receipt])
    status = await store.get(task.id)
    assert (status.state, status.attempts) == ("pending", 0)


async def test_tasks_written_ahead_run_only_once_activated(store):
    task = new_task()
    task.held_until = time.time() + 3600  # written before the response
    await store.enqueue([task])
    assert (await store.get(task.id)).info(time.time()).state == "pending"
    assert await store.claim("w", 1, 30) == []
    await store.activate([task.id])
    assert [c.id for c in await store.claim("w", 1, 30)] == [task.id]


async def test_held_tasks_become_runnable_when_the_hold_runs_out(store):
    task = new_task()
    task.held_until = time.time() + 0.1  # the writer died before activating it
    await store.enqueue([task])
    assert await store.claim("w", 1, 30) == []
    await asyncio.sleep(0.15)
    assert [c.id for c in await store.claim("w", 1, 30)] == [task.id]


async def test_start_activates_and_claims_what_can_run_now(store):
    now_task, delayed, follower = new_task(), new_task(due_in=60), new_task()
    follower.after = f'["{now_task.id}"]'
    for held in (now_task, delayed, follower):
        held.held_until = time.time() + 3600
    await store.enqueue([now_task, delayed, follower])
    claimed = await store.start("w", [now_task.id, delayed.id, follower.id], lease=30, limit=10)
    assert [c.id for c in claimed] == [now_task.id]  # the delay and the order still hold
    states = [(await store.get(t.id)).info(time.time()).state for t in (delayed, follower)]
    assert states == ["scheduled", "pending"]


async def test_cancel_and_purge(store):
    done, cancelled, dead = new_task(), new_task(), new_task()
    await store.enqueue([done, cancelled, dead])
    assert await store.cancel([cancelled.id], "cancelled by test") == 1
    assert (await store.get(cancelled.id)).state == "cancelled"
    for claimed in await store.claim("w", 3, 30):
        await store.finish([succeeded(claimed) if claimed.id == done.id else failed(claimed)])
    assert await store.cancel([done.id, dead.id], "too late") == 0  # finished: nothing to do
    assert await store.purge(time.time() + 1, ("succeeded", "cancelled")) == 2
    assert await store.get(dead.id) is not None  # dead letters stay
    assert await store.purge(time.time() + 1) == 1
    with pytest.raises(ValueError, match="only finished"):
        await store.purge(time.time(), ("running",))


async def test_concurrent_writes_share_transactions(sqlite_store):
    store = sqlite_store
    before = store.transactions
    await asyncio.gather(*(store.enqueue([new_task()]) for _ in range(200)))
    assert (await store.counts())["pending"] == 200
    assert store.transactions - before < 200  # grouped: fewer commits than writes


async def test_one_bad_write_fails_alone(store):
    task, other = new_task(), new_task()
    assert await store.enqueue([task]) == [task.id]
    results = await asyncio.gather(
        store.enqueue([task]),  # duplicate id
        store.enqueue([other]),
        return_exceptions=True,
    )
    assert "UNIQUE constraint failed" in str(results[0])
    assert results[1] == [other.id]
    assert (await store.counts())["pending"] == 2


async def test_a_key_held_by_a_live_task_is_not_added_again(store):
    first, same, different = new_task(), new_task(), new_task()
    first.key = same.key = "report:7"
    different.key = "report:8"
    assert await store.enqueue([first]) == [first.id]
    assert await store.enqueue([same, different]) == [first.id, different.id]
    twice = [new_task(), new_task()]
    twice[0].key = twice[1].key = "once"
    assert await store.enqueue(twice) == [twice[0].id, twice[0].id]  # also within one write
    [claimed] = [c for c in await store.claim("w", 10, 30) if c.id == first.id]
    await store.finish([succeeded(claimed)])
    again = new_task()
    again.key = "report:7"
    assert await store.enqueue([again]) == [again.id]  # the first one finished


def test_urls(tmp_path):
    assert str(path_from_url("sqlite:///tasks.db")) == "tasks.db"
    assert str(path_from_url("sqlite:////var/lib/x.db")) == "/var/lib/x.db"
    for bad in ("sqlite://tasks.db", "sqlite:///", "postgres://x"):
        with pytest.raises(StoreError):
            path_from_url(bad)
    with pytest.raises(StoreError, match="unknown store 'redis'"):
        open_store("redis://localhost")
    assert isinstance(open_store("memory://"), MemoryStore)
    store = open_store(f"sqlite:///{tmp_path}/nested/dir/t.db")
    assert (tmp_path / "nested" / "dir" / "t.db").exists()
    store.close_sync()


def test_a_corrupt_or_unreadable_file_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"cannot open the SQLite store .*corrupt\.db"):
        SQLiteStore(corrupt)
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(directory)


async def test_a_task_waits_for_the_ones_it_comes_after(store):
    first, second = new_task(), new_task()
    second.after = f'["{first.id}"]'
    await store.enqueue([first, second])
    [claimed] = await store.claim("w", 10, 30)
    assert claimed.id == first.id
    assert await store.claim("w", 10, 30) == []
    await store.finish([failed(claimed)])  # finished, even if failed
    assert [c.id for c in await store.claim("w", 10, 30)] == [second.id]


async def test_sqlite_store_files_are_private(tmp_path):
    path = tmp_path / "new" / "deeper" / "tasks.db"
    store = SQLiteStore(path)
    now = time.time()
    await store.enqueue([NewTask(new_id(), "n", "{}", now, now)])
    files = [path, path.with_name("tasks.db-wal"), path.with_name("tasks.db-shm")]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    for directory in (path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    store.close_sync()


async def test_a_task_whose_lease_is_lost_again_and_again_ends_in_the_dead_letter(store):
    task = new_task()
    other = new_task(due_in=0.05)
    await store.enqueue([task])
    assert [c.lost for c in await store.claim("w1", 5, lease=0.01)] == [0]
    await asyncio.sleep(0.02)
    # The first loss: taken over like any task.
    assert [(c.id, c.lost) for c in await store.claim("w2", 5, lease=0.01)] == [(task.id, 1)]
    await store.enqueue([other])
    await asyncio.sleep(0.06)
    # Lost twice: a suspect, only claimed on its own; the normal claim takes the others.
    assert [c.id for c in await store.claim("w3", 5, lease=0.01)] == [other.id]
    assert [(c.id, c.lost) for c in await store.claim("w3", 5, 0.01, alone_first=True)] == [
        (task.id, 2)
    ]
    await asyncio.sleep(0.02)
    # A third loss would reach max_lost: dead-lettered instead of claimed.
    taken = await store.claim("w4", 5, lease=1, alone_first=True)
    assert [(c.id, c.lost) for c in taken] == [(other.id, 1)]  # no suspect left: a normal claim
    status = await store.get(task.id)
    assert status.state == "failed"
    assert "the lease was lost 3 times (max_lost_leases=3)" in status.error
    assert await store.retry([task.id]) == 1  # a retry starts its count again
    claimed = {c.id: c.lost for c in await store.claim("w5", 5, lease=1)}
    assert claimed[task.id] == 0


async def test_a_running_task_is_cancelled_through_its_next_renewal(store):
    task, other = new_task(), new_task()
    await store.enqueue([task, other])
    claims = {c.id: c for c in await store.claim("w", 2, 30)}
    assert await store.cancel([task.id], "not needed any more") == 1
    assert (await store.get(task.id)).state == "running"  # its worker stops it
    assert await store.renew([c.receipt for c in claims.values()], 30) == [task.id]
    cancelled = Settlement(claims[task.id].receipt, TaskState.CANCELLED)
    assert await store.finish([cancelled]) == [True]
    status = await store.get(task.id)
    assert (status.state, status.error) == ("cancelled", "not needed any more")
    await store.release([claims[task.id].receipt])  # nothing to give back any more
    assert (await store.get(task.id)).state == "cancelled"


async def test_a_cancelled_task_whose_worker_died_is_not_run_again(store):
    task = new_task()
    await store.enqueue([task])
    await store.claim("dead", 1, lease=0.05)
    await store.cancel([task.id], "stop")
    await asyncio.sleep(0.1)
    assert await store.claim("w2", 1, 30) == []
    assert (await store.get(task.id)).state == "cancelled"
