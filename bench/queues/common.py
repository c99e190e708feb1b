"""What every contender of bench/queues shares: the task body's bookkeeping and the CLI.

A contender module defines `setup()`, `enqueue(i, sent, sleep)`, optionally
`enqueue_many(items)`, optionally `install()` (makes its tables in a fresh PostgreSQL
database; without it, `setup()` then `teardown()` do), `teardown()`, and `WORKER` (the
command that runs one worker process with concurrency from $BENCH_CONCURRENCY). Its task
calls `record(i, sent, sleep)`. Runs are counted in Redis (database 15 of the bench's own
server, on either backend: counting in the PostgreSQL under test would load it with writes
that are not the contender's) as a set of task numbers (duplicates show as runs beyond the
set's size) and the start latency of each task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import redis.asyncio

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
COUNTS_URL = URL.rsplit("/", 1)[0] + "/15"
# Set when the bench runs on PostgreSQL: the fresh database of this measurement.
DATABASE = os.environ.get("BENCH_POSTGRES", "")
_counts: redis.asyncio.Redis | None = None


async def record(i: int, sent: float, sleep: float) -> None:
    """Called by every contender's task: note that task `i` ran, and how late it started."""
    global _counts
    started = time.time()
    if _counts is None:
        # Waits for a free connection rather than failing when 200 tasks count at once.
        pool = redis.asyncio.BlockingConnectionPool.from_url(COUNTS_URL, max_connections=64)
        _counts = redis.asyncio.Redis(connection_pool=pool)
    if sleep:
        await asyncio.sleep(sleep)
    async with _counts.pipeline(transaction=False) as pipe:
        pipe.sadd("ran", i)
        pipe.incr("runs")
        pipe.rpush("latency", started - sent)
        await pipe.execute()


async def _enqueue(module, n: int, producers: int, batch: bool, sleep: float) -> dict[str, float]:
    await module.setup()
    started = time.perf_counter()
    if batch:
        for at in range(0, n, 1000):
            now = time.time()
            await module.enqueue_many([(i, now, sleep) for i in range(at, min(at + 1000, n))])
    else:
        queue = iter(range(n))

        async def producer() -> None:
            for i in queue:
                await module.enqueue(i, time.time(), sleep)

        await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - started
    await module.teardown()
    return {"seconds": elapsed, "rate": n / elapsed}


async def _install(module) -> dict[str, float]:
    if hasattr(module, "install"):
        await module.install()
    else:
        await module.setup()
        await module.teardown()
    return {}


async def _latency(module, samples: int) -> dict[str, float]:
    await module.setup()
    for i in range(samples):
        await module.enqueue(i, time.time(), 0.0)
        await asyncio.sleep(0.02)
    await module.teardown()
    return {}


def main(module) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["enqueue", "enqueue-many", "latency", "install"])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    if args.what == "latency":
        result = asyncio.run(_latency(module, args.n))
    elif args.what == "install":
        result = asyncio.run(_install(module))
    else:
        many = args.what == "enqueue-many"
        result = asyncio.run(_enqueue(module, args.n, args.producers, many, args.sleep))
    print(json.dumps(result))
