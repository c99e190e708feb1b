"""bench/postgres/size.py: after many tasks, is the hot table back near its starting size?

    .venv/bin/python bench/postgres/size.py [--tasks 100000] [--url postgresql://postgres@127.0.0.1:5432/test]

Runs N no-op tasks through a Runner on a PostgreSQL store (one process, a fresh schema),
submitted 1000 at a time, every 100th failing for good (dead letters stay), and prints
`pg_total_relation_size` of the hot table `tasks` (heap, indexes, TOAST) and of `finished`
when the store is new, after the first 1000 tasks, and after all of them: the worker's
upkeep (`backbeat.stores.postgres_maintenance`, at its heartbeat) moves finished tasks out
and vacuums the hot table as they go, and once they are all done rebuilds its indexes
(its log line, printed, says what that gave back and took). Then the same run with the
upkeep turned off, for what the hot table would hold without it. The schemas are dropped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

import asyncpg

from backbeat import BackgroundTask, Runner, task
from backbeat.stores.postgres import PostgresStore


async def noop(n: int) -> None:
    pass


@task(name="bench.fails")
async def fails(n: int) -> None:
    raise RuntimeError(f"task {n} fails on purpose")


async def sizes(conn: asyncpg.Connection, schema: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT pg_total_relation_size(to_regclass($1)), "
        "coalesce(pg_total_relation_size(to_regclass($2)), 0)",
        f'"{schema}".tasks',
        f'"{schema}".finished',
    )
    return int(row[0]), int(row[1])


async def submit(runner: Runner, first: int, last: int) -> None:
    for chunk in range(first, last, 1000):
        await asyncio.gather(
            *(
                runner.asubmit(BackgroundTask(fails if i % 100 == 0 else noop, i))
                for i in range(chunk, min(chunk + 1000, last))
            )
        )
        await runner.join(timeout=600)


async def run(url: str, n: int, upkeep: bool) -> None:
    schema = f"bench_size_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    runner = Runner(store=f"{url}?schema={schema}", concurrency=200)
    runner.register(noop)
    if not upkeep:  # a step never comes due
        PostgresStore.upkeep = _no_upkeep  # type: ignore[method-assign]
    try:
        async with runner:
            rows = [("new", await sizes(conn, schema))]
            await submit(runner, 0, 1000)
            rows.append(("after 1,000 tasks", await sizes(conn, schema)))
            started = time.perf_counter()
            await submit(runner, 1000, n)
            elapsed = time.perf_counter() - started
            # The last heartbeats' steps: moved and vacuumed, then (the first step that moves
            # nothing) the indexes compacted.
            await asyncio.sleep(5)
            rows.append((f"after {n:,} tasks", await sizes(conn, schema)))
            store = runner.store
            assert store is not None
            counts = await store.counts()
        print(
            f"\nupkeep {'on' if upkeep else 'off'}: {n - 1000} tasks in {elapsed:.1f}s "
            f"({(n - 1000) / elapsed:.0f}/s); counts {counts}"
        )
        print("| when | tasks (hot) | finished |")
        print("|---|---:|---:|")
        for label, (hot, finished) in rows:
            print(f"| {label} | {hot / 1e6:.2f} MB | {finished / 1e6:.2f} MB |")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _no_upkeep(self: PostgresStore, holder: str) -> None:
    return None


class _Compactions(logging.Handler):
    """Prints the upkeep's compaction lines (the dead letters' lines are left out)."""

    def emit(self, record: logging.LogRecord) -> None:
        if "compact" in record.getMessage():
            print(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    backbeat_log = logging.getLogger("backbeat")
    backbeat_log.setLevel(logging.INFO)
    backbeat_log.propagate = False
    backbeat_log.addHandler(_Compactions())
    asyncio.run(run(args.url, args.tasks, upkeep=True))
    asyncio.run(run(args.url, args.tasks, upkeep=False))


if __name__ == "__main__":
    main()
