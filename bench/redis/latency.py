"""bench/redis/latency.py: how soon an idle worker starts a task written elsewhere.

    .venv/bin/python bench/redis/latency.py [--samples 200] [--url redis://127.0.0.1:6379/0]

Two runners on one Redis store (a fresh prefix), each with its own client: one only
writes (`execute=False`, as a web app behind workers), the other runs tasks and is
idle between samples, blocked on the stream. Each task notes when it started; the
latency is its start minus the moment the writer's `asubmit` returned. Then the same
for tasks with a delay (50-200 ms) and for retries after a backoff: start minus due.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import redis

from backbeat import BackgroundTask, Runner, task

started: dict[str, float] = {}
tried: set[str] = set()


@task(name="bench.note")
async def note(label: str) -> None:
    started[label] = time.time()


@task(name="bench.retry_once", retries=1, backoff=0.1)
async def retry_once(label: str) -> None:
    if label not in tried:
        tried.add(label)
        raise RuntimeError("first attempt fails")
    started[label] = time.time()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p = statistics.quantiles(ordered, n=100)
    return f"p50 {p[49] * 1000:6.2f} ms  p90 {p[89] * 1000:6.2f} ms  p99 {p[98] * 1000:6.2f} ms"


async def run(url: str, samples: int) -> None:
    prefix = f"bench-latency-{uuid.uuid4().hex[:8]}"
    store = f"{url}?prefix={prefix}"
    writer = Runner(store=store, execute=False)
    worker = Runner(store=store, poll_interval=1.0)
    immediate, delayed, retried = [], [], []
    async with writer, worker:
        await asyncio.sleep(0.5)  # the worker is idle, blocked on the stream
        for n in range(samples):
            label = f"now{n}"
            await writer.asubmit(BackgroundTask(note, label))
            sent = time.time()
            while label not in started:  # noqa: ASYNC110 - the task fills the dict
                await asyncio.sleep(0.0005)
            immediate.append(started[label] - sent)
            await asyncio.sleep(0.01)
        for n in range(samples // 2):
            label, delay = f"later{n}", random.uniform(0.05, 0.2)
            await writer.asubmit(BackgroundTask(note, label).using(delay=delay))
            due = time.time() + delay
            while label not in started:  # noqa: ASYNC110 - the task fills the dict
                await asyncio.sleep(0.001)
            delayed.append(started[label] - due)
        for n in range(samples // 4):
            label = f"retry{n}"
            task_id = await writer.asubmit(BackgroundTask(retry_once, label))
            while label not in started:  # noqa: ASYNC110 - the task fills the dict
                await asyncio.sleep(0.001)
            assert worker.store is not None
            stored = await worker.store.get(task_id)
            assert stored is not None
            retried.append(started[label] - stored.due_at)  # due_at: when the retry was due
    print(f"enqueue -> start, idle worker, n={len(immediate)}:  {percentiles(immediate)}")
    print(f"delay due -> start, n={len(delayed)}:             {percentiles(delayed)}")
    print(f"retry due -> start, n={len(retried)}:              {percentiles(retried)}")
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="{" + prefix + "}*", count=10_000):
        client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.samples))


if __name__ == "__main__":
    main()
