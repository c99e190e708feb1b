"""A durable app for the process tests (uvicorn and `backbeat worker`), set up by env vars."""

import os
import time

from backbeat import App, BackgroundTasks, Runner, get, post, status_route
from tests.apps.durable_tasks import mark, mark_start_and_sleep, sleep_and_mark

runner = Runner(
    store=os.environ["BACKBEAT_TEST_STORE"],
    execute=os.environ.get("BACKBEAT_TEST_EXECUTE", "1") == "1",
    lease=float(os.environ.get("BACKBEAT_TEST_LEASE", "2")),
    concurrency=int(os.environ.get("BACKBEAT_TEST_CONCURRENCY", "10")),
    shutdown_timeout=float(os.environ.get("BACKBEAT_TEST_SHUTDOWN", "5")),
    poll_interval=0.2,
)
# A plain function used by handlers: registered, so that workers may run it.
runner.register(sleep_and_mark)
runner.register(mark_start_and_sleep)


@post("/work")
async def work(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    job = tasks.add_task(sleep_and_mark, seconds, label)
    return {"id": job.id}


@post("/long")
async def long(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    """A task that marks its start (`start:LABEL`) and its end (`LABEL`)."""
    return {"id": tasks.add_task(mark_start_and_sleep, seconds, label).id}


async def audit(seconds: float, label: str) -> None:
    """A plain function next to the handlers: no @task, not registered (FastAPI's pattern)."""
    await sleep_and_mark(seconds, label)


@post("/audit")
async def audit_route(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    job = tasks.add_task(audit, seconds, label)
    return {"id": job.id}


def kill_worker(label: str) -> None:
    """A poison task: it kills the process that runs it, every time."""
    mark(label)
    os._exit(3)


async def block_loop(seconds: float, label: str) -> None:
    """An async task that blocks its event loop (a sync call inside async code)."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of this task
    mark(label)


@post("/poison")
async def poison(label: str, tasks: BackgroundTasks) -> dict[str, str]:
    return {"id": tasks.add_task(kill_worker, label).id}


@post("/block")
async def block(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    return {"id": tasks.add_task(block_loop, seconds, label).id}


@get("/health")
async def health() -> dict[str, bool]:
    """A route that stores nothing: it answers whatever the store's state."""
    return {"ok": True}


app = App(
    routes=[
        health,
        work,
        long,
        audit_route,
        poison,
        block,
        status_route(runner, include_errors=True),
    ],
    runner=runner,
)
