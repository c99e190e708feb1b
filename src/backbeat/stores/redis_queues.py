"""The Redis store's paused queues and the usage of its limits (`Store.pause_queue`,
`Store.gate_usage`), each one step of `redis.lua` (`RedisStore` passes its `_call`).

A paused queue is a member of the set ``<prefix>:paused``: the claim and start steps leave
its tasks out, and resuming it rings the bell idle workers block on. Kept in Redis, so a
pause holds for every process on it, and a queue with no task yet can be paused ahead.
"""

from __future__ import annotations

from backbeat.stores.gate_usage import busiest
from backbeat.stores.inspection import GateUsage
from backbeat.stores.redis_rows import Step, text


async def pause(call: Step, queue: str, paused: bool) -> None:
    await call("pause_queue", queue, int(paused))


async def paused_queues(call: Step) -> list[str]:
    return [text(queue) for queue in await call("paused_queues")]


async def gate_usage(call: Step) -> list[GateUsage]:
    """The script counts each gate recently used or waited for; the busiest are kept here."""
    rows = await call("gate_usage")
    used = {text(gate): int(count) for gate, count, _ in rows if int(count)}
    waiting = {text(gate): int(count) for gate, _, count in rows if int(count)}
    return busiest(used, waiting)
