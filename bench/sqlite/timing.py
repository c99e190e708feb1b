"""bench/sqlite/timing: how close to their due time stored delays and retries start.

    .venv/bin/python bench/sqlite/timing.py [--tasks 200]

One process, a SQLite store in a temp dir, poll_interval 1 s (the default). Half the
tasks have a delay drawn from 50-500 ms; the other half fail once and retry after a
backoff of 50-500 ms. For each, the error is (start of the attempt) - (due time),
both from the store's own columns (for a retried task, ``due_at`` is the retry time and
``started_at`` the start of the second attempt). Prints p50/p90/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sqlite3
import statistics
import tempfile
from pathlib import Path

from backbeat import BackgroundTask, Runner, task

attempts: dict[str, int] = {}


async def delayed(key: str) -> None:
    pass


@task(name="bench.retried", retries=1)
async def retried(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise RuntimeError("first attempt fails")


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
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    logging.getLogger("backbeat").setLevel(logging.ERROR)  # the retries' warnings
    with tempfile.TemporaryDirectory() as directory:
        delay_errors, retry_errors = asyncio.run(measure(args.tasks, Path(directory)))
    print("start - due time, SQLite store, poll_interval 1 s:")
    print(summary("delays", delay_errors))
    print(summary("retries", retry_errors))


if __name__ == "__main__":
    main()
