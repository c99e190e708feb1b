"""The dashboard's store queries on a SQLite store of 1M tasks: p50/p95 of each.

    .venv/bin/python bench/dashboard/store_queries.py [--tasks 1000000] [--runs 50]
        [--file /tmp/backbeat-bench-dashboard-1000000.db] [--rebuild]
    .venv/bin/python bench/dashboard/store_queries.py --redis redis://127.0.0.1:6379 --tasks 50000

The file is filled once and kept under /tmp (later runs reuse it): the store's own schema
(made by `SQLiteStore.open`, indexes included), then rows written by direct INSERTs in
one transaction, not through `enqueue`/`claim`/`finish` (which would take minutes for a
fixture): 99% succeeded, 0.5% failed (four kinds of error), 0.5% waiting (half due, half
scheduled for later), a few running, over 30 days of ids, spread at random, 3 queues and
20 task names. Each query then runs `--runs` times through the store's API (a thread hop,
as the dashboard calls it) and prints its p50 and p95 in milliseconds.

With ``--redis URL``, the same queries on a Redis store filled through its own writes
(enqueue, claim, finish: all made now, so the time filters see every task), under a
prefix of its own that is deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

from backbeat.ids import lowest_id, new_id
from backbeat.status import TaskState
from backbeat.stores import SQLiteStore
from backbeat.stores.base import NewTask, Settlement, Store
from backbeat.stores.inspection import TaskFilter
from backbeat.stores.redis import RedisStore
from backbeat.stores.sqlite_counts import recount

NAMES = [f"app.task_{n:02d}" for n in range(20)]
QUEUES = ["default", "mail", "reports"]
ERRORS = [
    "ValueError: bad input {n}",
    "KeyError: 'user_{n}'",
    "TimeoutError: the task ran longer than its timeout of 30s",
    "ConnectionError: cannot reach smtp.example.com:25 (attempt {n})",
]
RUNNING = 20


def fill(path: Path, total: int) -> None:
    """The fixture: direct INSERTs into the store's own table (see the module's docstring)."""
    asyncio.run(_create(path))
    rng = random.Random(16)
    now = time.time()
    start = now - 30 * 86_400
    failed = total // 200
    waiting = total // 200
    kinds = ["failed"] * failed + ["waiting"] * waiting + ["running"] * RUNNING
    kinds += ["succeeded"] * (total - len(kinds))
    rng.shuffle(kinds)
    # The running ones are the newest (started a moment ago), the others anywhere.
    kinds = [k for k in kinds if k != "running"] + ["running"] * RUNNING
    step = (now - 60 - start) / total
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    sql = (
        "INSERT INTO backbeat_tasks (id, name, payload, state, attempts, created_at, due_at, "
        "started_at, finished_at, lease_until, worker, error, traceback, result, queue) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    batch: list[tuple[Any, ...]] = []
    for n, kind in enumerate(kinds):
        created = start + n * step
        task_id = lowest_id(created)[:10] + new_id()[10:]
        name = NAMES[rng.randrange(len(NAMES))]
        queue = QUEUES[n % 3]
        user = f"user{rng.randrange(100_000)}@example.com"
        payload = json.dumps({"args": [n, user], "kwargs": {}})
        row: tuple[Any, ...]
        if kind == "succeeded":
            row = ("succeeded", 1, created, created, created + 0.01, created + 0.02, None,
                   "w1", None, None, "null")  # fmt: skip
        elif kind == "failed":
            error = ERRORS[rng.randrange(len(ERRORS))].format(n=n)
            row = ("failed", 3, created, created, created + 5, created + 5.1, None, "w1",
                   error, "Traceback (most recent call last):\n  ...\n" + error, None)  # fmt: skip
        elif kind == "waiting":
            due = created if rng.random() < 0.5 else now + rng.uniform(60, 86_400)
            row = ("pending", 0, created, due, None, None, None, None, None, None, None)
        else:
            row = ("running", 1, created, created, now, None, now + 3600, "w1", None, None,
                   None)  # fmt: skip
        state, attempts, created_at, due, started, finished, lease, worker, err, tb, res = row
        batch.append((task_id, name, payload, state, attempts, created_at, due, started,
                      finished, lease, worker, err, tb, res, queue))  # fmt: skip
        if len(batch) == 10_000:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    recount(conn)  # written finished, as no store writes them: no trigger counted them
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def _create(path: Path) -> None:
    store = SQLiteStore(path)
    await store.open()
    await store.close()


async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float, object]:
    took = []
    result: object = None
    for _ in range(runs):
        began = time.perf_counter()
        result = await fn()
        took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1], result


def described(result: object) -> str:
    if isinstance(result, list):
        return f"{len(result)} rows"
    page = getattr(result, "tasks", None)
    if page is not None:
        return f"{len(page)} tasks, scanned {result.scanned}"  # type: ignore[attr-defined]
    if isinstance(result, dict):
        return ", ".join(f"{k} {v}" for k, v in result.items())
    return str(result)


async def fill_redis(store: Store, total: int) -> None:
    """A Redis fixture through the store's own writes: enqueued, then claimed and settled a
    thousand at a time (99% succeed, 0.5% fail), the rest left waiting (half scheduled)."""
    rng = random.Random(16)
    now = time.time()
    for start in range(0, total, 1000):
        await store.enqueue(
            [
                NewTask(
                    id=new_id(),
                    name=NAMES[rng.randrange(len(NAMES))],
                    payload=json.dumps({"args": [n, f"user{rng.randrange(100_000)}@example.com"]}),
                    created_at=now,
                    due_at=now if n < total * 0.9975 else now + 86_400,
                    queue=QUEUES[n % 3],
                )
                for n in range(start, min(start + 1000, total))
            ]
        )
    settled = 0
    while settled < total * 0.995:
        claims = await store.claim("bench", 1000, 600)
        settlements = [
            Settlement(c.receipt, TaskState.FAILED, error=ERRORS[n % 4].format(n=n))
            if rng.random() < 0.005
            else Settlement(c.receipt, TaskState.SUCCEEDED, result="null")
            for n, c in enumerate(claims)
        ]
        await store.finish(settlements)
        settled += len(claims)


async def measure(store: Store, runs: int) -> None:
    failed_one = (await store.search(TaskFilter(state="failed"), limit=1)).tasks[0]
    middle = lowest_id(time.time() - 15 * 86_400)
    searches: dict[str, TaskFilter] = {
        "no filter": TaskFilter(),
        "state=pending": TaskFilter(state="pending"),
        "state=scheduled": TaskFilter(state="scheduled"),
        "state=running": TaskFilter(state="running"),
        "state=succeeded": TaskFilter(state="succeeded"),
        "state=failed": TaskFilter(state="failed"),
        "state=cancelled (none)": TaskFilter(state="cancelled"),
        "queue=mail": TaskFilter(queue="mail"),
        "name=app.task_07": TaskFilter(name="app.task_07"),
        "id prefix (12 chars)": TaskFilter(id=failed_one.id[:12]),
        "argument (rare: one user)": TaskFilter(argument="user4242@"),
        "argument (common)": TaskFilter(argument="@example.com"),
        "error (rare)": TaskFilter(error="smtp.example.com"),
        "created in the last hour": TaskFilter(created_after=time.time() - 3600),
        "created before 15 days ago": TaskFilter(created_before=time.time() - 15 * 86_400),
        "failed + queue + error": TaskFilter(state="failed", queue="mail", error="KeyError"),
    }
    rows: list[tuple[str, float, float, str]] = []
    for label, where in searches.items():
        p50, p95, got = await timed(lambda where=where: store.search(where), runs)
        rows.append((f"search {label}", p50, p95, described(got)))
    p50, p95, got = await timed(lambda: store.search(TaskFilter(), before=middle), runs)
    rows.append(("search, a page 15 days back (cursor)", p50, p95, described(got)))
    p50, p95, got = await timed(lambda: store.failure_groups(), runs)
    rows.append(("failure_groups", p50, p95, described(got)))
    p50, p95, got = await timed(lambda: store.oldest_due(), runs)
    rows.append(("oldest_due", p50, p95, "found" if got else "none"))
    p50, p95, got = await timed(lambda: store.oldest_due("mail"), runs)
    rows.append(("oldest_due(queue)", p50, p95, "found" if got else "none"))
    p50, p95, got = await timed(lambda: store.counts(), runs)
    rows.append(("counts", p50, p95, described(got)))
    p50, p95, got = await timed(lambda: store.counts("mail"), runs)
    rows.append(("counts(queue)", p50, p95, described(got)))
    print(f"| query ({runs} runs) | p50 ms | p95 ms | result |")
    print("|---|---:|---:|---|")
    for label, p50, p95, what in rows:
        print(f"| {label} | {p50:.2f} | {p95:.2f} | {what} |")


def count(path: Path) -> int:
    """The tasks in a cached file (0 if none: a fill that was stopped committed nothing)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM backbeat_tasks").fetchone()[0])
    except sqlite3.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--redis",
        help="instead: a Redis URL; --tasks (say 50000) are written under a prefix of their "
        "own, timed, then deleted",
    )
    args = parser.parse_args()
    if args.redis:
        asyncio.run(on_redis(args.redis, args.tasks, args.runs))
        return
    path = args.file or Path(f"/tmp/backbeat-bench-dashboard-{args.tasks}.db")
    if args.rebuild or count(path) != args.tasks:
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        began = time.monotonic()
        fill(path, args.tasks)
        print(f"filled {path} with {args.tasks:,} tasks in {time.monotonic() - began:.0f}s")
    asyncio.run(on_sqlite(path, args.runs))


async def on_sqlite(path: Path, runs: int) -> None:
    store = SQLiteStore(path, create=False)
    await store.open()
    try:
        await measure(store, runs)
    finally:
        await store.close()


async def on_redis(url: str, total: int, runs: int) -> None:
    prefix = f"bench-dashboard-{uuid.uuid4().hex[:8]}"
    store = RedisStore(url, prefix=prefix, timeout=30)
    await store.open()
    try:
        began = time.monotonic()
        await fill_redis(store, total)
        print(f"wrote {total:,} tasks under prefix {prefix} in {time.monotonic() - began:.0f}s")
        await measure(store, runs)
    finally:
        await store.close()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=10_000))
        for at in range(0, len(keys), 1000):
            client.delete(*keys[at : at + 1000])


if __name__ == "__main__":
    main()
