"""arq 0.28: `create_pool(...).enqueue_job`, an `arq` worker (poll_delay lowered to 0.01 s)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from arq import create_pool
from arq.connections import RedisSettings
from common import URL, main, record

SETTINGS = RedisSettings.from_dsn(URL)
WORKER = [sys.executable, "-m", "arq", "arq_side.WorkerSettings"]
_pool = None


async def noop(ctx, i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


class WorkerSettings:
    functions = (noop,)
    redis_settings = SETTINGS
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "32"))
    poll_delay = 0.01
    keep_result = 0


async def setup() -> None:
    global _pool
    _pool = await create_pool(SETTINGS)


async def teardown() -> None:
    await _pool.aclose()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await _pool.enqueue_job("noop", i, sent, sleep)


if __name__ == "__main__":
    main(sys.modules[__name__])
