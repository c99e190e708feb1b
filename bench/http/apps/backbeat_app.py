"""The seed endpoint on backbeat: pydantic body, decorator task, 201 JSON.

`app` hands tasks to the supervised runner (backbeat's default); `inline_app`
is the same routes with ``runner=False`` (tasks run inside the request, tier 1).
"""

import asyncio
import os
import tempfile

from common import Sent, UserIn, send_email_notification

from backbeat import App, BackgroundTask, JSONResponse, Runner, get, post


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Created"})


async def slow_email(message: str) -> None:
    await asyncio.sleep(1)
    await send_email_notification(message)


# For the latency comparison: the same endpoint whose task takes a second, and one with none.
@post("/register/slow-task", background=BackgroundTask(slow_email, message="Account created"))
async def create_user_slow_task(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Created"})


@post("/register/no-task")
async def create_user_no_task(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Created"})


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": Sent.count}


routes = [create_user, create_user_slow_task, create_user_no_task, sent_count]
# Room for a second's worth of one-second tasks at the latency run's rate.
app = App(routes=routes, runner=Runner(concurrency=5000, max_pending=50_000, keep_finished=100))
inline_app = App(routes=routes, runner=False)
# Durable: every request's task is written to SQLite before the response starts.
durable_app = App(
    routes=[create_user, sent_count],
    runner=Runner(
        store=os.environ.get("BENCH_HTTP_STORE")
        or f"sqlite:///{tempfile.mkdtemp(prefix='bench-http-')}/tasks.db"
    ),
)
# Distributed: the same, on Redis (bench/http/run.py empties the prefix before and after).
redis_app = App(
    routes=[create_user, sent_count],
    runner=Runner(
        store=(os.environ.get("BENCH_HTTP_REDIS") or "redis://127.0.0.1:6379/0")
        + "?prefix=bench-http"
    ),
)
