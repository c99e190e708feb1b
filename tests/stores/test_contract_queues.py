"""The store contract's paused queues and limits' usage (`Store.pause_queue`,
`Store.paused_queues`, `Store.gate_usage`), on every store (the `store` fixture)."""

import asyncio
import json
import time

import pytest

from backbeat.stores import open_store
from backbeat.stores.gate_usage import MOST
from backbeat.stores.inspection import GateUsage
from tests.stores.rows import new_task, succeeded

pytestmark = pytest.mark.anyio


def rate_gate(name: str, key: str | None, limit: int, window: float) -> str:
    return json.dumps(["rate", name, f"{limit}/{window:g}s", key])


def concurrency_gate(name: str, slots: int, key: str | None) -> str:
    return json.dumps(["concurrency", name, slots, key])


async def claim_ids(store, limit=100, worker="w", lease=30.0, queues=None):
    return sorted(c.id for c in await store.claim(worker, limit, lease, queues=queues))


async def test_a_paused_queue_is_not_claimed_the_others_are(store):
    mail = [new_task(queue="mail") for _ in range(3)]
    other = [new_task(queue="default") for _ in range(2)]
    await store.enqueue([*mail, *other])
    assert await store.paused_queues() == []
    await store.pause_queue("mail", True)
    await store.pause_queue("mail", True)  # idempotent
    assert await store.paused_queues() == ["mail"]
    assert await claim_ids(store) == sorted(t.id for t in other)
    assert await claim_ids(store) == []
    assert await claim_ids(store, queues=("mail",)) == []  # asked for by name too
    # Enqueue still takes them: they wait.
    late = new_task(queue="mail")
    assert await store.enqueue([late]) == [late.id]
    counts = await store.counts("mail")
    assert counts["pending"] == 4 and counts["running"] == 0
    await store.pause_queue("mail", False)
    assert await store.paused_queues() == []
    assert await claim_ids(store) == sorted([*(t.id for t in mail), late.id])


async def test_a_paused_queue_is_not_started_by_the_writer_only_activated(store):
    held = new_task(queue="mail", held_until=time.time() + 3600)
    free = new_task(queue="default", held_until=time.time() + 3600)
    await store.enqueue([held, free])
    await store.pause_queue("mail", True)
    started = await store.activate_and_claim("w", [held.id, free.id], 30, 10)
    assert [c.id for c in started] == [free.id]
    assert (await store.get(held.id)).state == "pending"  # activated: it waits for the resume
    assert await claim_ids(store) == []
    await store.pause_queue("mail", False)
    assert await claim_ids(store) == [held.id]


async def test_running_tasks_of_a_paused_queue_finish_normally(store):
    task = new_task(queue="mail")
    await store.enqueue([task])
    [claim] = await store.claim("w", 10, 30)
    await store.pause_queue("mail", True)
    assert await store.renew([claim.receipt], 30) == []  # not stopped
    assert await store.finish([succeeded(claim, "1")]) == [True]
    assert (await store.get(task.id)).state == "succeeded"


async def test_a_lost_task_of_a_paused_queue_is_taken_over_after_the_resume(store):
    task = new_task(queue="mail")
    await store.enqueue([task])
    await store.claim("dead", 10, 0.05)
    await store.pause_queue("mail", True)
    await asyncio.sleep(0.1)  # its lease runs out
    assert await claim_ids(store) == []
    assert await store.claim("w", 10, 30, alone_first=True) == []
    await store.pause_queue("mail", False)
    [again] = await store.claim("w", 10, 30)
    assert again.id == task.id and again.lost == 1


async def test_an_unknown_queue_can_be_paused_ahead(store):
    await store.pause_queue("later", True)
    assert await store.paused_queues() == ["later"]
    first = new_task(queue="later")
    await store.enqueue([first])
    assert await claim_ids(store) == []
    await store.pause_queue("nowhere", False)  # resuming what is not paused: nothing
    assert await store.paused_queues() == ["later"]


async def test_gated_tasks_of_a_paused_queue_wait_too(store):
    gate = concurrency_gate("mail.send", 2, "acme")
    gated = [new_task(queue="mail", concurrency_gate=gate, max_concurrency=2) for _ in range(2)]
    rated = new_task(
        queue="mail", rate_gate=rate_gate("mail.send", None, 5, 60), rate_limit=5, rate_window=60
    )
    other = new_task(queue="default", concurrency_gate=gate + "x", max_concurrency=1)
    await store.enqueue([*gated, rated, other])
    await store.pause_queue("mail", True)
    assert await claim_ids(store) == [other.id]
    assert await claim_ids(store) == []
    await store.pause_queue("mail", False)
    assert await claim_ids(store) == sorted([*(t.id for t in gated), rated.id])


async def test_resume_wakes_a_waiting_worker(store):
    await store.enqueue([new_task(queue="mail")])
    await store.pause_queue("mail", True)
    await store.claim("w", 10, 30)  # what a worker does before it waits
    await store.wait(0)  # the enqueue's own signal

    async def resume_soon():
        await asyncio.sleep(0.1)
        await store.pause_queue("mail", False)

    resumer = asyncio.create_task(resume_soon())
    started = time.monotonic()
    await store.wait(5)
    assert time.monotonic() - started < 2.0  # woken by the resume, not the timeout
    await resumer
    assert len(await claim_ids(store)) == 1


async def test_a_pause_does_not_make_waiting_workers_spin(store):
    await store.enqueue([new_task(queue="mail"), new_task(queue="mail", due_in=30)])
    await store.pause_queue("mail", True)
    await store.claim("w", 10, 30)
    await store.wait(0)
    started = time.monotonic()
    await store.wait(0.3)
    assert time.monotonic() - started >= 0.25  # nothing runnable: the whole timeout


async def test_a_pause_survives_reopening_the_store(store):
    if repr(store).startswith("MemoryStore"):
        pytest.skip("the memory store keeps nothing across processes")
    await store.pause_queue("mail", True)
    await store.close()
    url = str(getattr(store, "url", "")) or f"sqlite:///{store.path}"
    again = open_store(url)
    await again.open()
    try:
        assert await again.paused_queues() == ["mail"]
        await again.enqueue([new_task(queue="mail")])
        assert await claim_ids(again) == []
    finally:
        await again.close()


async def test_gate_usage_of_a_rate_limit_and_a_keyed_concurrency_limit(store):
    assert await store.gate_usage() == []
    rate = rate_gate("emails.send", "acme", 2, 60)
    slots = concurrency_gate("reports.build", 1, "tenant-1")
    rated = [
        new_task("emails.send", rate_gate=rate, rate_limit=2, rate_window=60) for _ in range(5)
    ]
    keyed = [new_task("reports.build", concurrency_gate=slots, max_concurrency=1) for _ in range(3)]
    await store.enqueue([*rated, *keyed])
    usage = {u.kind: u for u in await store.gate_usage()}
    assert usage["rate"] == GateUsage("rate", "emails.send", "acme", 2, 60.0, used=0, waiting=5)
    assert usage["concurrency"] == GateUsage(
        "concurrency", "reports.build", "tenant-1", 1, 0.0, used=0, waiting=3
    )
    claims = await store.claim("w", 100, 30)
    assert len(claims) == 3  # two starts of the rate limit, one slot
    usage = {u.kind: u for u in await store.gate_usage()}
    assert (usage["rate"].used, usage["rate"].waiting) == (2, 3)
    assert (usage["concurrency"].used, usage["concurrency"].waiting) == (1, 2)
    # A slot given back is no longer used; the starts stay counted for their window.
    finished = [c for c in claims if c.name == "reports.build"]
    await store.finish([succeeded(finished[0])])
    usage = {u.kind: u for u in await store.gate_usage()}
    assert (usage["concurrency"].used, usage["concurrency"].waiting) == (0, 2)
    assert usage["rate"].used == 2


async def test_gate_usage_counts_only_the_current_window_and_a_queue_limit(store):
    queue_gate = json.dumps(["queue-rate", "mail", "3/0.2s"])
    tasks = [
        new_task(queue="mail", rate_gate=queue_gate, rate_limit=3, rate_window=0.2)
        for _ in range(3)
    ]
    await store.enqueue(tasks)
    assert len(await store.claim("w", 10, 30)) == 3
    [usage] = await store.gate_usage()
    assert usage == GateUsage("rate", "mail", "", 3, 0.2, used=3, waiting=0)
    await asyncio.sleep(0.3)  # the window is over: nothing used, nothing waits
    assert await store.gate_usage() == []


async def test_gate_usage_is_bounded_to_the_busiest(store):
    tasks = []
    for n in range(MOST + 20):
        gate = concurrency_gate("work", 1, f"k{n:04d}")
        copies = 2 if n < 10 else 1  # the first ten keys have a task more waiting
        tasks += [new_task("work", concurrency_gate=gate, max_concurrency=1) for _ in range(copies)]
    await store.enqueue(tasks)
    usage = await store.gate_usage()
    assert len(usage) == MOST
    assert {u.key for u in usage[:10]} == {f"k{n:04d}" for n in range(10)}
    assert all(u.waiting == 2 for u in usage[:10])
    assert all(u.waiting == 1 for u in usage[10:])
