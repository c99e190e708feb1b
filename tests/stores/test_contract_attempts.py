"""The store contract's attempt history (`Store.attempts`): the attempts that did not succeed,
oldest first, on every store (the `store` fixture)."""

import asyncio
import time

import pytest

from backbeat.status import TaskState
from backbeat.stores.base import Settlement
from backbeat.stores.inspection import ATTEMPTS_KEPT
from tests.stores.rows import failed, new_task, succeeded

pytestmark = pytest.mark.anyio


async def one_claim(store, worker="w", lease=30.0):
    [claim] = await store.claim(worker, 1, lease)
    return claim


async def test_retries_and_the_dead_letter_are_kept_with_their_errors(store):
    task = new_task(retries=2)
    await store.enqueue([task])
    assert await store.attempts(task.id) == []
    first = await one_claim(store, "w1")
    await store.finish([failed(first, "ValueError: one", "trace 1", retry_at=time.time())])
    second = await one_claim(store, "w2")
    await store.finish([failed(second, "KeyError: two", "trace 2")])
    history = await store.attempts(task.id)
    assert [(a.number, a.worker, a.outcome, a.error, a.traceback) for a in history] == [
        (1, "w1", "retried", "ValueError: one", "trace 1"),
        (2, "w2", "failed", "KeyError: two", "trace 2"),
    ]
    stored = await store.get(task.id)
    assert history[1].started_at == pytest.approx(stored.started_at)
    assert history[0].started_at <= history[0].finished_at <= history[1].started_at
    assert history[1].finished_at == pytest.approx(stored.finished_at)


async def test_a_success_writes_no_attempt(store):
    task = new_task(retries=1)
    await store.enqueue([task])
    first = await one_claim(store)
    await store.finish([failed(first, "E: boom", retry_at=time.time())])
    again = await one_claim(store)
    await store.finish([succeeded(again, "1")])
    assert [a.outcome for a in await store.attempts(task.id)] == ["retried"]
    other = new_task()
    await store.enqueue([other])
    await store.finish([succeeded(await one_claim(store))])
    assert await store.attempts(other.id) == []


async def test_a_release_is_no_attempt(store):
    task = new_task()
    await store.enqueue([task])
    await store.release([(await one_claim(store)).receipt])
    assert await store.attempts(task.id) == []


async def test_a_cancelled_attempt_is_kept_with_its_reason(store):
    task = new_task()
    await store.enqueue([task])
    claim = await one_claim(store, "w1")
    assert await store.cancel([task.id], "stop it") == 1
    await store.finish([Settlement(claim.receipt, TaskState.CANCELLED)])
    [attempt] = await store.attempts(task.id)
    assert (attempt.number, attempt.worker, attempt.outcome) == (1, "w1", "cancelled")
    assert attempt.error == "stop it" and attempt.traceback is None
    # A waiting task cancelled never ran: no attempt.
    waiting = new_task(due_in=60)
    await store.enqueue([waiting])
    await store.cancel([waiting.id], "no")
    assert await store.attempts(waiting.id) == []


async def test_a_cancelled_task_whose_worker_is_gone_is_kept_as_cancelled(store):
    task = new_task()
    await store.enqueue([task])
    await one_claim(store, "gone", lease=0.05)
    await store.cancel([task.id], "stop it")
    await asyncio.sleep(0.1)
    await store.claim("w", 10, 30)  # notices it
    [attempt] = await store.attempts(task.id)
    assert (attempt.worker, attempt.outcome, attempt.error) == ("gone", "cancelled", "stop it")


async def test_lost_attempts_are_kept_when_taken_over_and_when_dead_lettered(store):
    task = new_task()
    await store.enqueue([task])
    first = await one_claim(store, "dead1", lease=0.05)
    await asyncio.sleep(0.1)
    taken = await store.claim("w2", 10, 30)  # the lease ran out: taken over
    assert [c.id for c in taken] == [task.id]
    [lost] = await store.attempts(task.id)
    assert (lost.number, lost.worker, lost.outcome, lost.error) == (1, "dead1", "lost", None)
    assert lost.finished_at >= first.created_at
    # take_over: the next claim takes it over, the attempt is lost as well.
    assert await store.take_over("w2") == [task.id]
    await asyncio.sleep(0.01)
    assert await store.claim("w3", 10, 30, max_lost=2) == []  # its second loss: dead letter
    history = await store.attempts(task.id)
    assert [(a.number, a.worker, a.outcome) for a in history] == [
        (1, "dead1", "lost"),
        (2, "w2", "lost"),
    ]
    assert "dead-lettered" in history[1].error
    assert (await store.get(task.id)).state == "failed"


async def test_a_lost_gated_attempt_is_kept_when_it_goes_back_in_line(store):
    task = new_task(concurrency_gate="g", max_concurrency=1)
    await store.enqueue([task])
    await one_claim(store, "dead", lease=0.05)
    await asyncio.sleep(0.1)
    again = await one_claim(store, "w2")
    assert again.id == task.id
    [lost] = await store.attempts(task.id)
    assert (lost.number, lost.worker, lost.outcome) == (1, "dead", "lost")


async def test_only_the_latest_attempts_are_kept(store):
    task = new_task(retries=ATTEMPTS_KEPT + 5)
    await store.enqueue([task])
    for n in range(ATTEMPTS_KEPT + 5):
        claim = await one_claim(store)
        await store.finish([failed(claim, f"E: {n + 1}", retry_at=time.time())])
    history = await store.attempts(task.id)
    assert len(history) == ATTEMPTS_KEPT
    assert [a.number for a in history] == list(range(6, ATTEMPTS_KEPT + 6))
    assert history[-1].error == f"E: {ATTEMPTS_KEPT + 5}"


async def test_attempts_go_with_the_task(store):
    task = new_task()
    await store.enqueue([task])
    await store.finish([failed(await one_claim(store), "E: gone")])
    assert len(await store.attempts(task.id)) == 1
    assert await store.purge(time.time() + 1, ("failed",)) == 1
    assert await store.attempts(task.id) == []
    assert await store.attempts("unknown") == []
