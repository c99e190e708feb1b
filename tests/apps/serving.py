"""Apps served by a real uvicorn in tests/test_serving.py.

Tasks write lines to the file named by $BACKBEAT_TEST_OUT so the test process
can see what ran. Logging is left unconfigured: this is what a plain
`uvicorn app:app` console shows.
"""

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.routing import Route

from backbeat import App, BackgroundTask, BackgroundTasks, JSONResponse, Runner, get, post


def mark(line: str) -> None:
    with open(os.environ["BACKBEAT_TEST_OUT"], "a") as out:
        out.write(f"{line} {time.time()}\n")


async def slow_task() -> None:
    await asyncio.sleep(1)
    mark("slow-done")


def explode() -> None:
    raise RuntimeError("task exploded on purpose")


@post("/slow", background=BackgroundTask(slow_task))
async def slow() -> JSONResponse:
    return JSONResponse({"accepted": True})


@post(
    "/fail", background=BackgroundTasks([BackgroundTask(explode), BackgroundTask(mark, "sibling")])
)
async def fail() -> dict[str, bool]:
    return {"ok": True}


@get("/ping")
async def ping() -> dict[str, str]:
    return {"pong": "yes"}


async def sleep_and_mark(seconds: float) -> None:
    await asyncio.sleep(seconds)
    mark(f"slept-{seconds:g}")


@post("/sleep")
async def sleep(seconds: float, tasks: BackgroundTasks) -> dict[str, str]:
    job = tasks.add_task(sleep_and_mark, seconds)
    return {"id": job.id}


routes = [slow, fail, ping, sleep]
app = App(routes=routes)
# Without a runner (tasks inline in the request), for the control tests.
inline_app = App(routes=routes, runner=False)
# A short drain, for the SIGTERM test.
shutdown_app = App(routes=routes, runner=Runner(shutdown_timeout=2))


async def starlette_fail(request):  # type: ignore[no-untyped-def]
    tasks = StarletteTasks()
    tasks.add_task(explode)
    tasks.add_task(mark, "sibling")
    return StarletteJSONResponse({"ok": True}, background=tasks)


async def starlette_ping(request):  # type: ignore[no-untyped-def]
    return StarletteJSONResponse({"pong": "yes"})


# The control: Starlette's own tasks, to show what the serving tests guard against.
starlette_app = Starlette(
    routes=[Route("/fail", starlette_fail, methods=["POST"]), Route("/ping", starlette_ping)]
)
