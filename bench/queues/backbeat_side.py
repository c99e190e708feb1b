"""backbeat: `Runner(store=redis://…)` (or `postgresql://…` with `--backend postgres`), a
registered task, `backbeat worker`."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import DATABASE, URL, main, record

from backbeat import BackgroundTask, BackgroundTasks, Runner, task

runner = Runner(
    store=f"{DATABASE}?schema=backbeat" if DATABASE else f"{URL}?prefix=bench",
    execute=False,
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "32")),
    max_pending=100_000,
)
WORKER = [
    sys.executable,
    "-m",
    "backbeat",
    "worker",
    "backbeat_side:runner",
    "--log-level",
    "WARNING",
]


@task(name="bench.noop")
async def noop(i: int, sent: float, sleep: float) -> None:
    await record(i, sent, sleep)


async def setup() -> None:
    await runner.start()


async def teardown() -> None:
    await runner.drain()


async def enqueue(i: int, sent: float, sleep: float) -> None:
    await runner.asubmit(BackgroundTask(noop, i, sent, sleep))


async def enqueue_many(items: list[tuple[int, float, float]]) -> None:
    await runner.asubmit(
        BackgroundTasks([BackgroundTask(noop, *item) for item in items], as_group=True)
    )


if __name__ == "__main__":
    main(sys.modules[__name__])
