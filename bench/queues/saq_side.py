"""saq 0.26: `Queue.from_url(...).enqueue`, a `saq` worker; on Redis, or its PostgreSQL
queue (`saq[postgres]`) with `--backend postgres`."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import DATABASE, URL, main, record
from saq import Queue

queue = Queue.from_url(DATABASE or URL)
WORKER = [sys.executable, "-m", "saq", "saq_side.settings", "--quiet"]


async def noop(ctx, *, i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


settings = {
    "queue": queue,
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "32")),
}


async def setup() -> None:
    await queue.connect()


async def teardown() -> None:
    await queue.disconnect()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await queue.enqueue("noop", i=i, sent=sent, sleep=sleep)


if __name__ == "__main__":
    main(sys.modules[__name__])
