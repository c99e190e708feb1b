"""The no-op task of bench/sqlite, importable by `backbeat worker` processes."""

import os

from backbeat import App, Runner, task


@task(name="bench.noop")
async def noop(index: int) -> None:
    pass


runner = Runner(
    store=os.environ.get("BENCH_STORE", "sqlite:///bench.db"),
    execute=False,
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    poll_interval=0.05,
)
app = App(runner=runner)
