"""No-op tasks per second on one worker, with and without gates, on SQLite and Redis.

    .venv/bin/python bench/limits/run.py [--n 5000] [--stores sqlite,redis]

For each store: N no-op tasks are written first (batches of 500), then one runner in this
process (concurrency 100: one worker) is started and timed until all have run. Three kinds:
no limits; ``rate_limit="1000000/s"`` (a rate gate far above what is reached: every start
is logged and checked); ``concurrency_key`` over 200 customers, ``max_concurrency=1``
(200 lines, each holding one slot at a time). Redis: 127.0.0.1:6379, a prefix of its own,
deleted after. Prints tasks/s and each kind's ratio to the no-limit run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid

from backbeat import BackgroundTask, BackgroundTasks, Runner, task


@task(name="bench.plain")
async def plain(n: int) -> None:
    pass


@task(name="bench.rated", rate_limit="1000000/s")
async def rated(n: int) -> None:
    pass


@task(name="bench.keyed", concurrency_key="customer", max_concurrency=1)
async def keyed(customer: int, n: int) -> None:
    pass


KINDS = {
    "no limits": lambda n: BackgroundTask(plain, n),
    "rate_limit 1000000/s": lambda n: BackgroundTask(rated, n),
    "concurrency_key (200 keys, max 1)": lambda n: BackgroundTask(keyed, n % 200, n),
}


async def measure(url: str, make, n: int) -> float:
    runner = Runner(store=url, concurrency=100, max_pending=n + 1)
    for start in range(0, n, 500):
        batch = [make(i) for i in range(start, min(start + 500, n))]
        await runner.asubmit(BackgroundTasks(tasks=batch, as_group=True))
    began = time.perf_counter()
    async with runner:
        await runner.join(600)
        took = time.perf_counter() - began
        assert runner.store is not None
        counts = await runner.store.counts()
    assert counts["succeeded"] == n, counts
    return n / took


async def drop_redis(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis()
    keys = [key async for key in client.scan_iter(match="{" + prefix + "}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    logging.getLogger("backbeat").setLevel(logging.ERROR)  # not "created a new store" each time
    for store in args.stores.split(","):
        rates = {}
        # A first, untimed kind warms the process up (imports, the JIT-less caches).
        for kind, make in [("warm-up", KINDS["no limits"]), *KINDS.items()]:
            if store == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    rates[kind] = await measure(f"sqlite:///{tmp}/tasks.db", make, args.n)
            else:
                prefix = f"bench-limits-{uuid.uuid4().hex[:8]}"
                try:
                    rates[kind] = await measure(
                        f"redis://127.0.0.1:6379/0?prefix={prefix}", make, args.n
                    )
                finally:
                    await drop_redis(prefix)
        del rates["warm-up"]
        base = rates["no limits"]
        for kind, rate in rates.items():
            print(f"{store:6} {kind:36} {rate:8,.0f} tasks/s per worker  {rate / base:5.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
