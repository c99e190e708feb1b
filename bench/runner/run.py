"""bench/runner: the runner's own overhead per task, beside a bare asyncio loop.

    .venv/bin/python bench/runner/run.py [--tasks 100000] [--repeat 3]

Three ways to run N no-op async tasks (each made with two small arguments),
best of --repeat runs each, in one process:

* bare      — ``asyncio.create_task(noop(a, b))`` N times, then wait for all: the ceiling;
* runner    — ``runner.submit(BackgroundTask(noop, a, b))`` N times, then ``runner.join()``
              (ids, status, limits, retries machinery included), concurrency 100;
* inline    — one ``BackgroundTasks`` of N tasks awaited in sequence (tier 1).

Then the cost of one task id (80 bits from the CSPRNG each, see ids.py) and memory
per pending task: N tasks submitted behind a blocked slot,
measured with tracemalloc (task object, its status record and queue entry).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import time
import timeit
import tracemalloc

from backbeat import BackgroundTask, BackgroundTasks, Runner
from backbeat.ids import new_id


async def noop(a: int, b: str) -> None:
    pass


async def bare(n: int) -> float:
    started = time.perf_counter()
    tasks = [asyncio.create_task(noop(i, "ab")) for i in range(n)]
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


async def through_runner(n: int) -> float:
    async with Runner(max_pending=n + 1, keep_finished=n) as runner:
        started = time.perf_counter()
        for i in range(n):
            runner.submit(BackgroundTask(noop, i, "ab"))
        await runner.join()
        elapsed = time.perf_counter() - started
        assert runner.stats()["succeeded"] == n
    return elapsed


async def inline(n: int) -> float:
    started = time.perf_counter()
    tasks = BackgroundTasks([BackgroundTask(noop, i, "ab") for i in range(n)])
    await tasks()
    return time.perf_counter() - started


async def bytes_per_pending_task(n: int) -> float:
    gate = asyncio.Event()
    async with Runner(concurrency=1, max_pending=n + 1, keep_finished=n) as runner:
        runner.submit(BackgroundTask(gate.wait))
        await asyncio.sleep(0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            runner.submit(BackgroundTask(noop, i, "ab"))
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert runner.stats()["pending"] == n
        gate.set()
        await runner.join()
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.tasks

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, fn in (("bare", bare), ("runner", through_runner), ("inline", inline)):
            gc.collect()
            elapsed = asyncio.run(fn(n))
            best[name] = min(best.get(name, float("inf")), elapsed)
    memory = asyncio.run(bytes_per_pending_task(min(n, 20_000)))
    id_cost = min(timeit.repeat(new_id, number=100_000, repeat=5)) / 100_000

    print(
        f"bench/runner — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{n} no-op tasks, best of {args.repeat}"
    )
    print()
    print("| how | tasks/s | µs/task | ÷ bare |")
    print("|---|---:|---:|---:|")
    labels = {
        "bare": "bare `asyncio.create_task` loop (ceiling)",
        "runner": "backbeat `Runner.submit` + `join`",
        "inline": "inline `BackgroundTasks` (tier 1)",
    }
    for name in ("bare", "runner", "inline"):
        rate = n / best[name]
        print(
            f"| {labels[name]} | {rate:,.0f} | {1e6 / rate:.1f} | "
            f"{best['bare'] / best[name]:.2f}x |"
        )
    print()
    print(f"one task id (`new_id()`): {id_cost * 1e6:.2f} µs")
    print(f"memory per pending task (two small arguments): {memory:,.0f} bytes")


if __name__ == "__main__":
    main()
