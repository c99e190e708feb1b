"""backbeat in a Lilya app: ``uvicorn examples.lilya_app:app``.

A response's tasks run after it under backbeat's runner (isolated, retried by their
``@task`` policy), kept in ./.backbeat/lilya.db or $BACKBEAT_STORE: a reminder accepted
before a kill -9 runs after the restart. ``GET /tasks/{id}`` answers a task's status.
"""

from __future__ import annotations

import logging
import os

from lilya.apps import Lilya
from lilya.requests import Request
from lilya.responses import JSONResponse
from lilya.routing import Path

from backbeat import BackbeatMiddleware, Runner, task
from backbeat.lilya import BackgroundTask, BackgroundTasks, status_paths

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.lilya_app")


@task(retries=3, backoff=0.2)
async def send_welcome(email: str) -> None:
    log.info("welcome sent to %s", email)


@task(delay=float(os.environ.get("REMIND_AFTER", "2")))
async def remind(email: str) -> None:
    log.info("reminder sent to %s", email)


async def signup(request: Request) -> JSONResponse:
    email = str((await request.json())["email"])
    tasks = BackgroundTasks([BackgroundTask(send_welcome, email), BackgroundTask(remind, email)])
    return JSONResponse({"task": tasks.tasks[0].id}, status_code=202, background=tasks)


runner = Runner(store=os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/lilya.db"))
app = BackbeatMiddleware(
    Lilya(routes=[Path("/signup", signup, methods=["POST"]), *status_paths(runner)]),
    runner=runner,
)
