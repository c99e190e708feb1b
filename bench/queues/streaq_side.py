"""streaq 7.2: `Worker(...)`, `task.enqueue(...)` and `enqueue_many`, a `streaq` worker."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import URL, main, record
from streaq import Worker

worker = Worker(redis_url=URL, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "32")))
WORKER = [sys.executable, "-m", "streaq", "run", "streaq_side:worker"]


@worker.task()
async def noop(i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


async def setup() -> None:
    await worker.__aenter__()


async def teardown() -> None:
    await worker.__aexit__(None, None, None)


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await noop.enqueue(i, sent, sleep)


async def enqueue_many(items: list[tuple[int, float, float]]) -> None:
    await worker.enqueue_many([noop.enqueue(*item) for item in items])


if __name__ == "__main__":
    main(sys.modules[__name__])
