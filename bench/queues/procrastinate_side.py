"""procrastinate 3.10: `App(PsycopgConnector(...))`, `defer_async` and `batch_defer_async`,
a `procrastinate worker` (LISTEN/NOTIFY on, as shipped)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import procrastinate
from common import DATABASE, main, record

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DATABASE))
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "32")
WORKER = [sys.executable, "-m", "procrastinate", "--app", "procrastinate_side.app", "worker",
          "--concurrency", CONCURRENCY]  # fmt: skip


@app.task(name="noop")
async def noop(i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


async def install() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def setup() -> None:
    await app.open_async()


async def teardown() -> None:
    await app.close_async()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await noop.defer_async(i=i, sent=sent, sleep=sleep)


async def enqueue_many(items: list[tuple[int, float, float]]) -> None:
    await noop.batch_defer_async(*({"i": i, "sent": at, "sleep": sleep} for i, at, sleep in items))


if __name__ == "__main__":
    main(sys.modules[__name__])
