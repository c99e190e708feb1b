"""bench/redis/memory.py: does a long run leave Redis bigger than what is still pending?

    .venv/bin/python bench/redis/memory.py [--tasks 100000] [--url redis://127.0.0.1:6379/0]

Runs N no-op tasks through a Runner on a Redis store (one process, a fresh prefix),
with every 100th task failing for good (dead letters stay), then purges what finished
(what the workers' purge loop does once `finished_ttl` has passed) and prints Redis's
`used_memory` and the prefix's key count before, after the run, and after the purge.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis

from backbeat import BackgroundTask, Runner, task


async def noop(n: int) -> None:
    pass


@task(name="bench.fails")
async def fails(n: int) -> None:
    raise RuntimeError(f"task {n} fails on purpose")


def measure(client: redis.Redis, prefix: str) -> tuple[int, int]:
    keys = sum(1 for _ in client.scan_iter(match="{" + prefix + "}*", count=10_000))
    return int(client.info("memory")["used_memory"]), keys


async def run(url: str, n: int) -> None:
    prefix = f"bench-memory-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    before = measure(client, prefix)
    runner = Runner(store=f"{url}?prefix={prefix}", concurrency=200, max_task_size=1000)
    runner.register(noop)
    started = time.perf_counter()
    async with runner:
        for chunk in range(0, n, 1000):
            await asyncio.gather(
                *(
                    runner.asubmit(BackgroundTask(fails if i % 100 == 0 else noop, i))
                    for i in range(chunk, min(chunk + 1000, n))
                )
            )
        await runner.join(timeout=600)
        elapsed = time.perf_counter() - started
        after = measure(client, prefix)
        store = runner.store
        assert store is not None
        purged = await store.purge(time.time() + 1, ("succeeded", "cancelled"))
        stats = await store.counts()
    purged_state = measure(client, prefix)
    print(f"{n} tasks in {elapsed:.1f}s ({n / elapsed:.0f}/s); purged {purged}; left {stats}")
    print("| when | used_memory | keys of the prefix |")
    print("|---|---:|---:|")
    for label, (memory, keys) in (
        ("before", before),
        ("after the run", after),
        ("after the purge", purged_state),
    ):
        print(f"| {label} | {memory / 1e6:.1f} MB | {keys} |")
    for key in client.scan_iter(match="{" + prefix + "}*", count=10_000):
        client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.tasks))


if __name__ == "__main__":
    main()
