"""taskiq 0.13 + taskiq-redis: `RedisStreamBroker`, `task.kiq(...)`, a `taskiq worker`."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import URL, main, record
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(URL)
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "32")
WORKER = [sys.executable, "-m", "taskiq", "worker", "taskiq_side:broker", "--workers", "1",
          "--max-async-tasks", CONCURRENCY, "--log-level", "WARNING"]  # fmt: skip


@broker.task(task_name="noop")
async def noop(i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


async def setup() -> None:
    await broker.startup()


async def teardown() -> None:
    await broker.shutdown()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await noop.kiq(i, sent, sleep)


if __name__ == "__main__":
    main(sys.modules[__name__])
