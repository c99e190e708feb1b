"""The store contract's gates (`Store.claim`): rate limits and per-key concurrency, on every
store (the `store` fixture of tests/stores/conftest.py, like test_contract.py)."""

import asyncio
import time

import pytest

from tests.stores.rows import failed, new_task, succeeded

pytestmark = pytest.mark.anyio


def rated(gate: str = "r", limit: int = 3, window: float = 0.5, **policy):
    return new_task(rate_gate=gate, rate_limit=limit, rate_window=window, **policy)


def keyed(gate: str = "c", slots: int = 1, **policy):
    return new_task(concurrency_gate=gate, max_concurrency=slots, **policy)


async def enqueue_in_order(store, tasks):
    """One by one, so that their ids and due times follow the list's order."""
    for task in tasks:
        await store.enqueue([task])
    return [task.id for task in tasks]


async def claim_ids(store, limit=100, worker="w", lease=30.0):
    return [c.id for c in await store.claim(worker, limit, lease)]


async def test_a_rate_gate_starts_at_most_its_limit_per_window_in_order(store):
    ids = await enqueue_in_order(store, [rated(limit=3, window=0.5) for _ in range(7)])
    started = time.monotonic()
    assert await claim_ids(store) == ids[:3]  # one batch: the limit, the first in line
    assert await claim_ids(store) == []  # nor across claims
    while not (got := await claim_ids(store)):  # noqa: ASYNC110 - polling a store
        await asyncio.sleep(0.01)
    assert time.monotonic() - started >= 0.5
    assert got == ids[3:6]
    statuses = [await store.get(task_id) for task_id in ids[:6]]
    first, second = [s.started_at for s in statuses[:3]], [s.started_at for s in statuses[3:]]
    assert min(second) - max(first) >= 0.5 - 0.001  # the store's clock, to the ms


async def test_keyed_rate_gates_are_independent(store):
    tasks = [rated(gate=f"r{n % 2}", limit=2, window=30) for n in range(8)]
    ids = await enqueue_in_order(store, tasks)
    assert sorted(await claim_ids(store)) == sorted(ids[:4])  # two of each key
    assert await claim_ids(store) == []


async def test_a_concurrency_gate_holds_its_slots_while_tasks_run(store):
    ids = await enqueue_in_order(store, [keyed(slots=2) for _ in range(5)])
    claims = await store.claim("w", 10, 30)
    assert [c.id for c in claims] == ids[:2]
    assert await claim_ids(store) == []
    assert await store.finish([succeeded(claims[0])]) == [True]
    assert await claim_ids(store) == [ids[2]]  # the next in line, one slot
    assert await claim_ids(store) == []


async def test_a_slot_is_freed_by_a_retry_a_release_and_a_cancel(store):
    ids = await enqueue_in_order(store, [keyed(retries=1) for _ in range(4)])
    [first] = await store.claim("w", 10, 30)
    assert first.id == ids[0]
    # Scheduled for a retry later: waiting holds no slot.
    await store.finish([failed(first, retry_at=time.time() + 60)])
    [second] = await store.claim("w", 10, 30)
    assert second.id == ids[1]
    await store.release([second.receipt])  # given back: first in line again
    [again] = await store.claim("w", 10, 30)
    assert again.id == ids[1]
    assert await store.cancel([ids[1]], "no") == 1  # running: told at its renewal
    assert await store.renew([again.receipt], 30) == [ids[1]]
    assert await claim_ids(store) == []  # still running until its worker settles it
    await store.finish([failed(again, "cancelled")])
    assert await claim_ids(store) == [ids[2]]


async def test_a_lost_lease_frees_its_slot_and_the_task_runs_first_again(store):
    ids = await enqueue_in_order(store, [keyed() for _ in range(3)])
    [lost] = await store.claim("dead", 10, 0.5)
    assert await claim_ids(store) == []
    await asyncio.sleep(0.6)
    [again] = await store.claim("w2", 10, 30)
    assert (again.id, again.lost, again.attempts) == (ids[0], 1, 2)
    assert await claim_ids(store) == []  # never two holders of one slot
    assert await store.finish([succeeded(lost)]) == [False]  # fenced off
    assert await store.finish([succeeded(again)]) == [True]
    assert await claim_ids(store) == [ids[1]]


async def test_a_taken_over_worker_frees_its_slots_at_once(store):
    ids = await enqueue_in_order(store, [keyed() for _ in range(2)])
    await store.claim("dead", 10, 30)
    assert await claim_ids(store) == []
    assert await store.take_over("dead") == [ids[0]]
    [again] = await store.claim("w2", 10, 30)
    assert (again.id, again.lost) == (ids[0], 1)


async def test_gated_tasks_do_not_hold_back_others(store):
    gated = await enqueue_in_order(store, [keyed() for _ in range(3)])
    await store.enqueue([rated(limit=1, window=30) for _ in range(3)])
    free = await enqueue_in_order(store, [new_task() for _ in range(3)])
    got = await claim_ids(store, limit=100)
    assert gated[0] in got and set(free) <= set(got)
    assert len(got) == 1 + 1 + 3  # one per gate, every free task
    late = new_task()
    await store.enqueue([late])
    assert await claim_ids(store) == [late.id]  # the closed gates' lines wait, alone


async def test_a_line_keeps_priority_then_due_order(store):
    low = keyed(priority=0)
    high = keyed(priority=5)
    later_due = keyed(priority=5, due_in=-0.5)  # due before `high`: first of the two
    await enqueue_in_order(store, [low, high, later_due])
    order = []
    for _ in range(3):
        [claim] = await store.claim("w", 10, 30)
        order.append(claim.id)
        await store.finish([succeeded(claim)])
    assert order == [later_due.id, high.id, low.id]


async def test_a_claim_takes_no_more_than_its_limit_from_gates(store):
    ids = await enqueue_in_order(store, [keyed(gate=f"c{n}") for n in range(4)])
    assert await claim_ids(store, limit=2) == ids[:2]
    assert await claim_ids(store, limit=2) == ids[2:]


async def test_start_only_activates_gated_tasks_and_a_claim_starts_them(store):
    held = keyed(held_until=time.time() + 30)
    await store.enqueue([held])
    assert await store.activate_and_claim("w", [held.id], 30, 10) == []
    assert await claim_ids(store) == [held.id]


async def test_wait_ends_when_a_closed_rate_gate_opens(store):
    await store.enqueue([rated(limit=1, window=1.0) for _ in range(2)])
    assert len(await claim_ids(store)) == 1
    assert await claim_ids(store) == []
    await store.wait(0)  # the enqueue's signal, seen
    started = time.monotonic()
    await store.wait(5.0)
    waited = time.monotonic() - started
    assert 0.3 < waited < 2.0, waited  # the gate opens 1 s after the first start
    while not await claim_ids(store):  # noqa: ASYNC110 - open now, or within a clock tick
        await asyncio.sleep(0.005)


async def test_a_line_keeps_the_order_tasks_were_written_in_one_write(store):
    now = time.time()
    tasks = [keyed() for _ in range(20)]
    for task in tasks:
        task.due_at = now  # one write's tasks share their due time; their ids may not sort
    await store.enqueue(tasks)
    order = []
    for _ in tasks:
        [claim] = await store.claim("w", 10, 30)
        order.append(claim.id)
        await store.finish([succeeded(claim)])
    assert order == [task.id for task in tasks]


async def test_open_gates_and_other_tasks_share_claims_neither_starves(store):
    # Many tasks whose gates are open (a key each) and, behind them, other tasks.
    gated = await enqueue_in_order(store, [keyed(gate=f"k{n}") for n in range(20)])
    others = await enqueue_in_order(store, [new_task(priority=10) for _ in range(4)])
    one_slot = [await claim_ids(store, limit=1) for _ in range(4)]
    # One-slot claims alternate: two of each kind in four claims.
    assert sum(ids[0] in others for ids in one_slot) == 2
    assert sum(ids[0] in gated for ids in one_slot) == 2
    four_slots = await claim_ids(store, limit=4)
    assert len(four_slots) == 4
    assert sum(task_id in others for task_id in four_slots) == 2  # what was left of them
    # With nothing else waiting, the gated ones take the whole claim.
    assert len(await claim_ids(store, limit=10)) == 10
