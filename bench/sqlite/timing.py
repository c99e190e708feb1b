"""bench/sqlite/timing: how close to their due time stored delays, retries and steps start.

    .venv/bin/python bench/sqlite/timing.py [--tasks 200] [--lone 50] [--store URL]

One process, a SQLite store in a temp dir (or ``--store``: memory://, redis://…),
poll_interval 1 s (the default).

A batch: half the tasks have a delay drawn from 50-500 ms; the other half fail once and
retry after a backoff of 50-500 ms. For each, the error is (start of the attempt) - (due
time), both from the store's own columns (for a retried task, ``due_at`` is the retry
time and ``started_at`` the start of the second attempt).

Lone tasks, one at a time with nothing else running (a batch keeps the worker busy and
hides a missed wake-up): a sequence of three instant steps, measured from the end of
each step to the start of the next; and a task that fails once with a backoff of 50 ms,
measured from its retry's due time to the retry's start. Prints p50/p90/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sqlite3
import statistics
import tempfile
from pathlib import Path

from backbeat import BackgroundTask, BackgroundTasks, Runner, task

attempts: dict[str, int] = {}


async def delayed(key: str) -> None:
    pass


@task(name="bench.retried", retries=1)
async def retried(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise RuntimeError("first attempt fails")


async def step(key: str) -> None:
    pass


@task(name="bench.retried_lone", retries=1, backoff=0.05, max_backoff=0.05)
async def retried_lone(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise RuntimeError("first attempt fails")


async def measure_lone(n: int, store: str) -> tuple[list[float], list[float]]:
    """(end of a step -> start of the next), (retry due -> retry start), in seconds."""
    runner = Runner(store=store)
    runner.register(step)
    gaps: list[float] = []
    retry_errors: list[float] = []
    async with runner:
        for index in range(n):
            steps = [BackgroundTask(step, f"s{index}.{k}") for k in range(3)]
            await runner.asubmit(BackgroundTasks(steps))
            await runner.join(timeout=30)
            infos = [await runner.aget(each.id) for each in steps]
            for earlier, later in itertools.pairwise(infos):
                assert earlier and later and earlier.finished_at and later.started_at
                gaps.append((later.started_at - earlier.finished_at).total_seconds())
            retried_id = await runner.asubmit(BackgroundTask(retried_lone, f"lone{index}"))
            await runner.join(timeout=30)
            assert runner.store is not None
            stored = await runner.store.get(retried_id)
            assert stored and stored.started_at and stored.attempts == 2
            retry_errors.append(stored.started_at - stored.due_at)
    return gaps, retry_errors


async def measure(n: int, directory: Path) -> tuple[list[float], list[float]]:
    runner = Runner(store=f"sqlite:///{directory}/tasks.db")
    runner.register(delayed)
    async with runner:
        for index in range(n):
            wait = random.uniform(0.05, 0.5)
            if index % 2:
                job = BackgroundTask(delayed, f"d{index}").using(delay=wait)
            else:
                job = BackgroundTask(retried, f"r{index}").using(backoff=wait, max_backoff=wait)
            await runner.asubmit(job)
            await asyncio.sleep(random.uniform(0, 0.01))
        await runner.join(timeout=60)
    with sqlite3.connect(directory / "tasks.db") as conn:
        rows = conn.execute("SELECT name, started_at - due_at FROM backbeat_tasks").fetchall()
    delay_errors = [late for name, late in rows if name != "bench.retried"]
    retry_errors = [late for name, late in rows if name == "bench.retried"]
    return delay_errors, retry_errors


def summary(label: str, errors: list[float]) -> str:
    ms = sorted(e * 1000 for e in errors)
    q = statistics.quantiles(ms, n=100)
    shown = "  ".join(f"p{p} {q[p - 1]:5.1f} ms" for p in (50, 90, 99))
    return f"{label:<8} n={len(ms):<4} {shown}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200, help="the batch (0: none)")
    parser.add_argument("--lone", type=int, default=50, help="lone rounds (0: none)")
    parser.add_argument("--store", help="for the lone rounds (default: SQLite in a temp dir)")
    args = parser.parse_args()
    logging.getLogger("backbeat").setLevel(logging.ERROR)  # the retries' warnings
    with tempfile.TemporaryDirectory() as directory:
        if args.tasks:
            delay_errors, retry_errors = asyncio.run(measure(args.tasks, Path(directory)))
            print("a batch: start - due time, SQLite store, poll_interval 1 s:")
            print(summary("delays", delay_errors))
            print(summary("retries", retry_errors))
        if args.lone:
            store = args.store or f"sqlite:///{directory}/lone.db"
            gaps, retry_errors = asyncio.run(measure_lone(args.lone, store))
            print(f"lone tasks, {store.partition(':')[0]} store, poll_interval 1 s:")
            print(summary("steps", gaps))
            print(summary("retries", retry_errors))


if __name__ == "__main__":
    main()
