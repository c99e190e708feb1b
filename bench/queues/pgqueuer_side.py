"""pgqueuer 1.6: `Queries.enqueue` (one job, or lists of jobs) over an asyncpg pool, a
`pgqueuer.run` worker over one asyncpg connection (LISTEN/NOTIFY, batches of 10, as shipped)."""

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

sys.path.insert(0, os.path.dirname(__file__))

import asyncpg
from common import DATABASE, main, record
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, PgQueuer, Queries

CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "32")
# What `pgq run pgqueuer_side:worker --max-concurrent-tasks N` does, without its CLI: pgqueuer
# 1.6's fails on its own default log level ("'str' object has no attribute 'name'").
WORKER = [sys.executable, "-c", "import asyncio, pgqueuer; asyncio.run(pgqueuer.run("
          f"'pgqueuer_side:worker', max_concurrent_tasks={CONCURRENCY}))"]  # fmt: skip
_pool: asyncpg.Pool | None = None
_queries: Queries | None = None


@asynccontextmanager
async def worker() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(DATABASE)
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        await record(*json.loads(job.payload))

    try:
        yield pgq
    finally:
        await connection.close()


async def install() -> None:
    connection = await asyncpg.connect(DATABASE)
    try:
        await Queries(AsyncpgDriver(connection)).install()
    finally:
        await connection.close()


async def setup() -> None:
    global _pool, _queries
    _pool = await asyncpg.create_pool(DATABASE)
    _queries = Queries(AsyncpgPoolDriver(_pool))


async def teardown() -> None:
    await _pool.close()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await _queries.enqueue("noop", json.dumps([i, sent, sleep]).encode())


async def enqueue_many(items: list[tuple[int, float, float]]) -> None:
    payloads = [json.dumps(item).encode() for item in items]
    await _queries.enqueue(["noop"] * len(items), payloads, [0] * len(items))


if __name__ == "__main__":
    main(sys.modules[__name__])
