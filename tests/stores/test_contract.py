"""The store contract (`backbeat.stores.base.Store`), case by case, on every store."""

import asyncio
import time

import pytest

from backbeat.status import TaskState
from backbeat.stores.base import DuplicateTask, Settlement, lost_leases_error
from tests.stores.rows import failed, new_task, succeeded

pytestmark = pytest.mark.anyio


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
    follower.after = (now_task.id,)
    for held in (now_task, delayed, follower):
        held.held_until = time.time() + 3600
    await store.enqueue([now_task, delayed, follower])
    claimed = await store.activate_and_claim(
        "w", [now_task.id, delayed.id, follower.id], lease=30, limit=10
    )
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


async def test_one_bad_write_fails_alone(store):
    task, other = new_task(), new_task()
    assert await store.enqueue([task]) == [task.id]
    results = await asyncio.gather(
        store.enqueue([task]),  # duplicate id
        store.enqueue([other]),
        return_exceptions=True,
    )
    assert isinstance(results[0], DuplicateTask)
    assert results[0].task_id == task.id
    assert results[1] == [other.id]
    assert (await store.counts())["pending"] == 2


async def test_a_duplicate_id_stores_nothing_of_its_write(store):
    stored, fresh = new_task(), new_task()
    await store.enqueue([stored])
    with pytest.raises(DuplicateTask) as raised:
        await store.enqueue([fresh, stored])
    assert raised.value.task_id == stored.id
    twice = new_task()
    with pytest.raises(DuplicateTask):
        await store.enqueue([twice, twice])  # repeated within one write
    assert (await store.get(fresh.id), await store.get(twice.id)) == (None, None)
    assert (await store.counts())["pending"] == 1


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


async def test_a_task_waits_for_the_ones_it_comes_after(store):
    first, second = new_task(), new_task()
    second.after = (first.id,)
    await store.enqueue([first, second])
    [claimed] = await store.claim("w", 10, 30)
    assert claimed.id == first.id
    assert await store.claim("w", 10, 30) == []
    await store.finish([failed(claimed)])  # finished, even if failed
    assert [c.id for c in await store.claim("w", 10, 30)] == [second.id]


async def test_a_task_whose_lease_is_lost_again_and_again_ends_in_the_dead_letter(
    store, backbeat_log
):
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
    assert status.error == lost_leases_error(3)  # the one text, whichever store wrote it
    assert "the lease was lost 3 times (max_lost_leases=3)" in status.error
    [logged] = [r for r in backbeat_log.records if getattr(r, "task_id", None) == task.id]
    assert logged.task_name == task.name and "lease was lost 3 times" in logged.getMessage()
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


async def test_open_is_idempotent_and_a_closed_store_opens_again_when_used(store):
    await store.open()
    task = new_task()
    await store.enqueue([task])
    await store.close()
    assert (await store.get(task.id)).state == "pending"  # used again: opened again
    await store.open()
    assert (await store.counts())["pending"] == 1


async def test_wait_returns_on_a_write_at_a_due_time_or_after_its_timeout(store):
    started = time.monotonic()
    await store.wait(0.2)  # nothing happens: the timeout
    assert 0.15 < time.monotonic() - started < 1.0

    async def write_soon():
        await asyncio.sleep(0.05)
        await store.enqueue([new_task()])

    writer = asyncio.create_task(write_soon())
    started = time.monotonic()
    await store.wait(5)
    assert time.monotonic() - started < 1.0
    await writer
    await store.claim("w", 10, 30)

    await store.enqueue([new_task(due_in=0.3)])
    await store.wait(0)  # the write's own signal
    started = time.monotonic()
    await store.wait(5)
    assert 0.2 < time.monotonic() - started < 1.0  # woke when the delayed task fell due


async def test_wait_wakes_for_a_write_made_from_another_threads_loop(store):
    def write_elsewhere():
        time.sleep(0.1)
        asyncio.run(store.twin().enqueue([new_task()]))

    await store.wait(0)
    started = time.monotonic()
    writer = asyncio.get_running_loop().run_in_executor(None, write_elsewhere)
    await store.wait(5)
    assert time.monotonic() - started < 2.0
    await writer


async def test_a_signal_given_before_waiting_is_not_lost(store):
    await store.enqueue([new_task()])
    started = time.monotonic()
    await store.wait(5)
    assert time.monotonic() - started < 0.5


async def test_heartbeats_list_the_live_workers(store):
    from backbeat.stores.base import WorkerInfo

    def worker(name: str, queues=None) -> WorkerInfo:
        return WorkerInfo(name, "host", 42, queues, 10, 3, started_at=time.time())

    await store.heartbeat(worker("b", ("mail", "pdf")), 30)
    await store.heartbeat(worker("a"), 30)
    await store.heartbeat(worker("gone"), 0.05)
    await asyncio.sleep(0.1)
    alive = await store.workers()
    assert [w.name for w in alive] == ["a", "b"]
    assert alive[1].queues == ("mail", "pdf") and alive[0].queues is None
    assert (alive[0].running, alive[0].concurrency, alive[0].pid) == (3, 10, 42)
    assert alive[0].seen_at > time.time() - 5
    await store.heartbeat(worker("a"), 0)  # it stopped
    assert [w.name for w in await store.workers()] == ["b"]
    # Until someone takes it over, a worker whose heartbeats stopped is still on record.
    [gone] = [w for w in await store.workers(include_expired=True) if w.name == "gone"]
    assert gone.expires_at < time.time() < alive[0].expires_at


async def test_a_dead_workers_tasks_are_taken_over_at_once_and_its_outcomes_refused(store):
    from backbeat.stores.base import WorkerInfo

    mine, its_other, someone_elses = new_task(), new_task(), new_task()
    await store.enqueue([mine, its_other])
    held = await store.claim("dead", limit=10, lease=30)
    await store.enqueue([someone_elses])
    [others] = await store.claim("alive", limit=10, lease=30)
    await store.heartbeat(WorkerInfo("dead", "host", 42, None, 10, 2, time.time()), 30)
    taken = await store.take_over("dead")
    assert sorted(taken) == sorted([mine.id, its_other.id])
    assert [w.name for w in await store.workers(include_expired=True)] == []
    assert await store.take_over("dead") == []  # a second taker finds nothing
    again = await store.claim("new", limit=10, lease=30)
    assert sorted(task.id for task in again) == sorted(taken)
    assert all((task.attempts, task.lost) == (2, 1) for task in again)
    assert await store.finish([succeeded(task, "1") for task in held]) == [False, False]
    assert await store.renew([others.receipt], lease=30) == []  # not the dead one's


async def test_counts_of_one_queue(store):
    await store.enqueue([new_task(queue="mail"), new_task(queue="mail"), new_task(queue="pdf")])
    assert (await store.counts("mail"))["pending"] == 2
    assert (await store.counts("pdf"))["pending"] == 1
    assert (await store.counts("none"))["pending"] == 0
    assert (await store.counts())["pending"] == 3


async def test_queues_names_each_queue_with_tasks_once(store):
    assert await store.queues() == []
    await store.enqueue([new_task(queue="pdf"), new_task(queue="mail"), new_task(queue="mail")])
    assert await store.queues() == ["mail", "pdf"]


async def test_list_pages_newest_first_with_filters(store):
    tasks = []
    for n in range(5):
        tasks.append(new_task(name=f"job{n % 2}"))
        await store.enqueue([tasks[-1]])
        await asyncio.sleep(0.002)  # ids order by their millisecond, then at random
    newest_first = [t.id for t in reversed(tasks)]
    page = await store.list_tasks(limit=2)
    assert [t.id for t in page] == newest_first[:2]
    following = await store.list_tasks(limit=2, before=page[-1].id)
    assert [t.id for t in following] == newest_first[2:4]
    assert {t.name for t in await store.list_tasks(name="job1")} == {"job1"}
    [claimed, *_] = await store.claim("w", 1, 30)
    await store.finish([failed(claimed)])
    assert [t.id for t in await store.list_tasks(state="failed")] == [claimed.id]


async def test_progress_is_kept_for_the_current_attempt_only(store):
    task = new_task()
    await store.enqueue([task])
    [claimed] = await store.claim("w", 1, 30)
    assert await store.progress(claimed.receipt, '{"fraction": 0.5}') is True
    assert (await store.get(task.id)).progress == '{"fraction": 0.5}'
    assert await store.progress(task.id + ":7", '{"fraction": 1}') is False
