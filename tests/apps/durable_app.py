"""A durable app for the process tests (uvicorn and `backbeat worker`), set up by env vars."""

import os

from backbeat import App, BackgroundTasks, Runner, post
from tests.apps.durable_tasks import sleep_and_mark

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


@post("/work")
async def work(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    job = tasks.add_task(sleep_and_mark, seconds, label)
    return {"id": job.id}


async def audit(seconds: float, label: str) -> None:
    """A plain function next to the handlers: no @task, not registered (FastAPI's pattern)."""
    await sleep_and_mark(seconds, label)


@post("/audit")
async def audit_route(seconds: float, label: str, tasks: BackgroundTasks) -> dict[str, str]:
    job = tasks.add_task(audit, seconds, label)
    return {"id": job.id}


app = App(routes=[work, audit_route, runner.status_route()], runner=runner)
