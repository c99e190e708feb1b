"""Results and cancelling, on the in-process runner and on stores (SQLite, memory://)."""

import asyncio
import time

import pytest

from backbeat import BackgroundTask, BackgroundTasks, Runner, TaskCancelled, TaskFailed
from tests.apps import durable_tasks

pytestmark = pytest.mark.anyio

RUNNERS = pytest.mark.parametrize("kind", ["local", "sqlite", "memory://"])


def make_runner(kind: str, tmp_path, **options) -> Runner:
    if kind == "local":
        return Runner(**options)
    url = f"sqlite:///{tmp_path}/tasks.db" if kind == "sqlite" else kind
    return durable_tasks.runner(url, poll_interval=0.05, **options)


@RUNNERS
async def test_a_tasks_return_value_is_its_result(kind, tmp_path):
    async with make_runner(kind, tmp_path) as runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.total, [1, 2, 3.5]))
        assert await runner.aresult(task_id, timeout=5) == {"sum": 6.5, "count": 3}
        assert runner.get(task_id).result == {"sum": 6.5, "count": 3}


@RUNNERS
async def test_the_result_of_a_failed_task_raises_with_its_error(kind, tmp_path):
    async with make_runner(kind, tmp_path) as runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.flaky, "r"))
        with pytest.raises(TaskFailed, match="ConnectionError: r failed") as raised:
            await runner.aresult(task_id, timeout=5)
        assert raised.value.info.attempts == 2
        with pytest.raises(LookupError):
            await runner.aresult("01NOSUCHTASK0000000000000", timeout=1)


@RUNNERS
async def test_a_pending_task_cancelled_never_starts(kind, tmp_path):
    runner = make_runner(kind, tmp_path, concurrency=1)
    async with runner:
        blocker = await runner.asubmit(BackgroundTask(durable_tasks.sleep_and_mark, 0.3, "b"))
        later = await runner.asubmit(BackgroundTask(durable_tasks.record_sync, "never"))
        await asyncio.sleep(0.05)
        assert await runner.acancel(later, "not needed") is True
        await runner.join(timeout=5)
        with pytest.raises(TaskCancelled, match="not needed"):
            await runner.aresult(later)
        assert runner.get(blocker).state == "succeeded"
        assert await runner.acancel(blocker) is False  # finished: nothing to cancel
    assert ("never", "sync") not in durable_tasks.calls


@RUNNERS
async def test_a_running_async_task_is_cancelled(kind, tmp_path):
    runner = make_runner(kind, tmp_path, lease=0.3) if kind != "local" else Runner()
    async with runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.sleep_and_mark, 30, "long"))
        while runner.get(task_id).state != "running":  # noqa: ASYNC110 - polling a store
            await asyncio.sleep(0.01)
        started = time.monotonic()
        assert await runner.acancel(task_id, "stop it") is True
        with pytest.raises(TaskCancelled):
            await runner.aresult(task_id, timeout=5)
        assert time.monotonic() - started < 1.0  # at once, or at the next lease renewal
        info = runner.get(task_id)
        await runner.join(timeout=5)
    assert (info.state, info.error) == ("cancelled", "stop it")


async def test_cancelling_a_member_of_a_sequence_lets_the_next_one_run():
    seen: list[str] = []

    async def step(label: str) -> None:
        await asyncio.sleep(0.05)
        seen.append(label)

    first, second, third = (BackgroundTask(step, n) for n in ("1", "2", "3"))
    async with Runner() as runner:
        runner.submit(BackgroundTasks([first, second, third]))
        assert runner.cancel(second.id) is True
        await runner.join(timeout=5)
        assert runner.get(second.id).state == "cancelled"
    assert seen == ["1", "3"]


async def test_a_scheduled_task_cancelled_never_runs():
    ran = []
    async with Runner() as runner:
        task_id = runner.submit(BackgroundTask(ran.append, "x").using(delay=0.2))
        assert runner.get(task_id).state == "scheduled"
        assert runner.cancel(task_id) is True
        await runner.join(timeout=1)
        await asyncio.sleep(0.3)
    assert ran == []


def test_result_from_a_script_waits_for_the_workers(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    script = durable_tasks.runner(url)
    task_id = script.submit(BackgroundTask(durable_tasks.total, [2, 2]))

    async def worker() -> None:
        async with durable_tasks.runner(url, poll_interval=0.05) as runner:
            await runner.join(timeout=5)

    asyncio.run(worker())
    assert script.result(task_id, timeout=5) == {"sum": 4, "count": 2}


@RUNNERS
async def test_a_running_task_reports_its_progress(kind, tmp_path):
    async with make_runner(kind, tmp_path) as runner:
        task_id = await runner.asubmit(BackgroundTask(durable_tasks.stepwise, 4, 0.15))
        seen = []
        while (info := await runner.aget(task_id)).state != "succeeded":
            if info.progress and info.progress not in seen:
                seen.append(info.progress)
            await asyncio.sleep(0.02)
        assert info.progress == {"fraction": 1.0, "message": "step 4 of 4", "step": 4}
        assert len(seen) >= 2 and seen[0]["step"] < seen[-1]["step"]
        # From a sync task, in its thread, too.
        sync_id = await runner.asubmit(BackgroundTask(durable_tasks.stepwise_sync, 3))
        await runner.aresult(sync_id, timeout=5)
        await asyncio.sleep(0.1)  # the last report of a stored task is written after it
        assert (await runner.aget(sync_id)).progress in (
            {"fraction": 1.0, "step": 3},
            {"fraction": 2 / 3, "step": 2},
        )


def test_progress_outside_a_runner_does_nothing_and_bad_input_is_an_error():
    from backbeat import progress

    progress(0.5, "half")  # a plain call: no runner, nothing to record
    with pytest.raises(ValueError, match="from 0 to 1"):
        progress(1.5)


# --- queues, priorities, keys ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory://"])
async def test_workers_take_their_queues_and_higher_priority_first(kind, tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db" if kind == "sqlite" else kind
    store_runner = durable_tasks.runner(url, execute=False)
    store = store_runner.store
    for label, queue, priority in [("low", "mail", 0), ("high", "mail", 5), ("other", "pdf", 9)]:
        job = BackgroundTask(durable_tasks.sleep_and_mark, 0, label).using(
            queue=queue, priority=priority
        )
        await store_runner.asubmit(job)
    # Higher priority first: one at a time, the high one, then the low one.
    [high] = await store.claim("w", 1, 30, queues=("mail",))
    [low] = await store.claim("w", 1, 30, queues=("mail",))
    assert ('"high"' in high.payload, '"low"' in low.payload) == (True, True)
    assert (high.queue, low.queue) == ("mail", "mail")
    assert await store.claim("w", 10, 30, queues=("mail",)) == []
    [pdf] = await store.claim("w", 10, 30, queues=("pdf",))
    assert pdf.queue == "pdf"
    info = store_runner.get(pdf.id)
    assert info.queue == "pdf"


@RUNNERS
async def test_an_idempotency_key_adds_a_live_task_only_once(kind, tmp_path):
    async with make_runner(kind, tmp_path, concurrency=1) as runner:
        first = await runner.asubmit(
            BackgroundTask(durable_tasks.sleep_and_mark, 0.2, "k").using(key="report:42")
        )
        again = await runner.asubmit(
            BackgroundTask(durable_tasks.sleep_and_mark, 0.2, "k").using(key="report:42")
        )
        assert again == first
        await runner.join(timeout=5)
        later = await runner.asubmit(
            BackgroundTask(durable_tasks.sleep_and_mark, 0, "k").using(key="report:42")
        )
        assert later != first  # the first one finished: the key is free again
        await runner.join(timeout=5)


def test_queue_priority_and_key_options_are_checked():
    from backbeat import task

    with pytest.raises(ValueError, match="queue"):
        BackgroundTask(print).using(queue="")
    with pytest.raises(ValueError, match="priority"):
        BackgroundTask(print).using(priority="high")
    with pytest.raises(ValueError, match="key"):
        BackgroundTask(print).using(key="")
    with pytest.raises(ValueError, match="queue"):
        task(queue=3)
    with pytest.raises(ValueError, match="queues"):
        Runner(store="memory://", queues=[])


async def test_the_in_process_runner_starts_waiting_tasks_by_priority():
    order: list[str] = []
    gate = asyncio.Event()

    async def blocker() -> None:
        await gate.wait()

    async def note(label: str) -> None:
        order.append(label)

    async with Runner(concurrency=1) as runner:
        runner.submit(BackgroundTask(blocker))
        for label, priority in [("a0", 0), ("low", -1), ("high", 5), ("b0", 0), ("mid", 2)]:
            runner.submit(BackgroundTask(note, label).using(priority=priority))
        cancelled = runner.submit(BackgroundTask(note, "never").using(priority=9))
        assert runner.cancel(cancelled) is True
        gate.set()
        await runner.join(timeout=5)
    assert order == ["high", "mid", "a0", "b0", "low"]
