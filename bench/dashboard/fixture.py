"""A SQLite store with a large history, for the dashboard's budgets.

The schema is the store's own (`SQLiteStore.open` makes it, and adds its indexes again when
the dashboard opens the file); the rows are written by direct INSERTs, a million in about a
minute, shaped like what an app leaves behind: 30 days of tasks, 12 task names, 4 queues,
mostly succeeded, a few percent failed with a dozen kinds of error, some pending, cancelled
and dead; ids are real ids (creation time + 80 random bits) at their creation time.

    python bench/dashboard/fixture.py --tasks 1000000 --path /tmp/backbeat-bench/1000000.db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import time
from pathlib import Path

from backbeat.stores import SQLiteStore

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NAMES = [f"shop.{verb}" for verb in ("charge", "refund", "email", "invoice", "export", "resize")]
NAMES += [f"crm.{verb}" for verb in ("sync", "score", "merge", "notify", "import", "archive")]
QUEUES = ["default", "mail", "billing", "reports"]
ERRORS = [
    f"{kind}: {text}"
    for kind, text in [
        ("ConnectionError", "payment gateway unreachable"),
        ("TimeoutError", "task timed out after 30s"),
        ("ValueError", "invalid literal for int() with base 10: 'n/a'"),
        ("KeyError", "'customer_id'"),
        ("PermissionError", "[Errno 13] Permission denied: '/srv/exports'"),
        ("RuntimeError", "SMTP server said 451 try again later"),
    ]
]
# (state, share of the history): the rest succeeded.
STATES = [("failed", 0.03), ("pending", 0.01), ("cancelled", 0.005), ("dead", 0.002)]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 42, in run\n'
    "    await client.post(url, json=body)\n"
)


def task_id(ms: int) -> str:
    head = "".join(CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    return head + "".join(CROCKFORD[byte & 31] for byte in os.urandom(16))


def row(now: float, days: float, rng: random.Random) -> tuple[object, ...]:
    created = now - rng.random() * days * 86400
    draw = rng.random()
    state = "succeeded"
    for name, share in STATES:
        if draw < share:
            state = name
            break
        draw -= share
    name = rng.choice(NAMES)
    payload = json.dumps(
        {"args": [rng.randrange(10**6)], "kwargs": {"email": f"user{rng.randrange(10**5)}@ex.com"}}
    )
    started = finished = error = traceback = result = worker = None
    attempts = 0
    if state != "pending":
        started = created + rng.random() * 2
        finished = started + rng.random() * 3
        attempts = 1 if state == "succeeded" else rng.randint(1, 3)
        worker = f"web-{rng.randrange(4)}:{1000 + rng.randrange(50)}:W"
    if state in ("failed", "dead"):
        error = rng.choice(ERRORS)
        traceback = TRACEBACK + error + "\n"
    if state == "succeeded":
        result = json.dumps({"ok": True})
    if state == "pending":
        created = now - rng.random() * 3600  # pending work is recent
    return (
        task_id(int(created * 1000)),
        name,
        payload,
        state,
        attempts,
        created,
        created if state != "pending" else created + rng.random() * 7200,
        started,
        finished,
        worker,
        error,
        traceback,
        result,
        rng.choice(QUEUES),
    )


INSERT = (
    "INSERT INTO backbeat_tasks (id, name, payload, state, attempts, created_at, due_at, "
    "started_at, finished_at, worker, error, traceback, result, queue) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def build(path: Path, tasks: int, *, days: float = 30.0, seed: int = 16) -> None:
    """Make (or replace) the store at `path` with `tasks` tasks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(schema())
    rng = random.Random(seed)
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    batch = 50_000
    for start in range(0, tasks, batch):
        count = min(batch, tasks - start)
        with conn:
            conn.executemany(INSERT, (row(now, days, rng) for _ in range(count)))
    conn.execute("ANALYZE")
    conn.close()


def ensure(path: Path, tasks: int) -> None:
    """Build the store unless one with this many tasks is there already."""
    if path.exists():
        conn = sqlite3.connect(path)
        try:
            (have,) = conn.execute("SELECT count(*) FROM backbeat_tasks").fetchone()
        except sqlite3.DatabaseError:
            have = -1
        conn.close()
        if have == tasks:
            return
    started = time.monotonic()
    print(f"building {path} with {tasks} tasks ...", flush=True)
    build(path, tasks)
    print(f"built in {time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--path", type=Path, default=Path("/tmp/backbeat-bench/1000000.db"))
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    if args.rebuild:
        build(args.path, args.tasks)
    else:
        ensure(args.path, args.tasks)


if __name__ == "__main__":
    main()
