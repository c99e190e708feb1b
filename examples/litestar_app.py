"""backbeat in a Litestar app: ``uvicorn examples.litestar_app:app``.

The handler's decorator task, the injected ``tasks``, and the response's own
``background=`` all run after the response, under backbeat's runner (isolated,
retried by their ``@task`` policy, kept in ./.backbeat/litestar.db or
$BACKBEAT_STORE: a reminder accepted before a kill -9 runs after the restart).
``GET /tasks/{id}`` answers a task's status (in the OpenAPI schema at /schema).
Parameters are declared as Litestar 3 requires (``NamedDependency``, ``JSONBody``):
Litestar 2.25 imports this module without a deprecation warning.
"""

from __future__ import annotations

import asyncio
import logging
import os

from litestar import Litestar, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from pydantic import BaseModel

from backbeat import Runner, task
from backbeat.litestar import BackbeatPlugin, BackgroundTask, BackgroundTasks

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.litestar_app")

plugin = BackbeatPlugin(
    Runner(store=os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/litestar.db"))
)


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


@post("/signup", status_code=202, background=BackgroundTask(audit, "a signup"))
async def signup(data: JSONBody[Signup], tasks: NamedDependency[BackgroundTasks]) -> dict[str, str]:
    welcome = tasks.add_task(send_welcome, data.email)
    tasks.add_task(remind, data.email).using(delay=float(os.environ.get("REMIND_AFTER", "2")))
    return {"task": welcome.id}


@post("/unsubscribe", background=BackgroundTask(audit, "an unsubscription"))
async def unsubscribe(data: JSONBody[Signup]) -> Response[dict[str, str]]:
    # Litestar alone would drop the decorator's task here; with the plugin both run.
    job = BackgroundTask(audit, f"unsubscribed {data.email}")
    return Response({"task": job.id}, background=job)


app = Litestar([signup, unsubscribe, plugin.status_router()], plugins=[plugin])
