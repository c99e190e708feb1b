"""`TurnBatch`: what is added in one loop turn is flushed as one; ``one_at_a_time`` keeps one
write in flight and sends what came meanwhile in the next."""

import asyncio

import pytest

from backbeat.batching import TurnBatch

pytestmark = pytest.mark.anyio


async def test_a_turn_is_one_flush_and_each_turn_flushes_at_once():
    writes: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> None:
        writes.append(items)
        await release.wait()

    batch = TurnBatch(flush)
    batch.add(1, 2)
    batch.add(3)
    for _ in range(3):
        await asyncio.sleep(0)
    batch.add(4)  # the first write is still in flight: a second one starts anyway
    for _ in range(3):
        await asyncio.sleep(0)
    assert writes == [[1, 2, 3], [4]]
    release.set()
    await batch.settle()


async def test_one_at_a_time_sends_what_came_during_a_write_in_the_next():
    writes: list[list[int]] = []
    gates = [asyncio.Event() for _ in range(3)]

    async def flush(items: list[int]) -> None:
        writes.append(items)
        await gates[len(writes) - 1].wait()

    batch = TurnBatch(flush, one_at_a_time=True)
    batch.add(1)
    await asyncio.sleep(0)
    for item in (2, 3, 4):
        batch.add(item)
        await asyncio.sleep(0)
    assert writes == [[1]]
    gates[0].set()
    await asyncio.sleep(0.01)
    assert writes == [[1], [2, 3, 4]]
    gates[1].set()
    await batch.settle()
    assert writes == [[1], [2, 3, 4]]


async def test_one_at_a_time_flushes_an_item_added_as_the_last_write_ends():
    """Added after a write's flush returned but before its task's done callbacks ran: it
    once waited for ever (the batch still counted that write as in flight)."""
    writes: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        writes.append(items)
        if len(writes) == 1:  # runs after this returns, before the task's callbacks
            asyncio.get_running_loop().call_soon(batch.add, 2)

    batch = TurnBatch(flush, one_at_a_time=True)
    batch.add(1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert writes == [[1], [2]]
