"""The tasks the viewers benchmark keeps a worker busy with (`backbeat worker` loads this)."""

import asyncio
import os

from backbeat import Runner, progress, task

runner = Runner(store=os.environ.get("BACKBEAT_STORE"), poll_interval=0.1, concurrency=8)


@task(name="bench.step")
async def step(steps: int, pause: float) -> int:
    for done in range(1, steps + 1):
        await asyncio.sleep(pause)
        progress(done / steps, f"{done} of {steps}")
    return steps


@task(name="bench.fail")
async def fail(number: int) -> None:
    raise ValueError(f"task {number} fails on purpose")


runner.register_module(__name__)
