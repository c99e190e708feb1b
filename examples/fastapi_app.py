"""backbeat in a FastAPI app: ``uvicorn examples.fastapi_app:app``.

Three ways a handler gets work done after its response, all run by backbeat's
runner (isolated: one failing task stops no other; retried by their ``@task``
policy; kept in a SQLite file, ./.backbeat/fastapi.db or $BACKBEAT_STORE, so a
server killed while they wait runs them when it starts again):

- ``tasks: Tasks``, injected like FastAPI's own ``BackgroundTasks``, also into
  dependencies (one collection per request);
- FastAPI's own ``BackgroundTasks`` parameter (``install`` wires it to the runner);
- a response's ``background=``;
- a delayed task (a reminder) that waits in the store.

``GET /tasks/{id}`` answers a task's status (in the OpenAPI docs at /docs).
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from backbeat import BackgroundTask, Runner, task
from backbeat.fastapi import Tasks, install, status_router

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.fastapi_app")

app = FastAPI(title="backbeat + FastAPI")
runner = install(
    app, Runner(store=os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/fastapi.db"))
)
app.include_router(status_router(runner), prefix="/tasks")


class Signup(BaseModel):
    email: str


@task(retries=3, backoff=0.2)
async def send_welcome(email: str) -> str:
    await asyncio.sleep(0.1)  # the mail server
    log.info("welcome sent to %s", email)
    return f"welcome:{email}"


async def remind(email: str) -> None:
    log.info("reminder sent to %s", email)


def audit(event: str) -> None:
    """A plain function defined next to the handlers: found by name in any process."""
    log.info("audit: %s", event)


def audited(tasks: Tasks, source: str | None = None) -> None:
    """A dependency adding a task to the same collection as the handler's."""
    if source:
        tasks.add_task(audit, f"signup from {source}")


@app.post("/signup", status_code=202, dependencies=[Depends(audited)])
async def signup(data: Signup, tasks: Tasks) -> dict[str, str]:
    welcome = tasks.add_task(send_welcome, data.email)
    tasks.add_task(remind, data.email).using(delay=float(os.environ.get("REMIND_AFTER", "2")))
    return {"task": welcome.id}


@app.post("/feedback")
async def feedback(data: Signup, background_tasks: BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(audit, f"feedback from {data.email}")
    return {"thanks": True}


@app.post("/unsubscribe")
async def unsubscribe(data: Signup) -> JSONResponse:
    job = BackgroundTask(audit, f"unsubscribed {data.email}")
    return JSONResponse({"task": job.id}, background=job)
