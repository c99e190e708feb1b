"""The reference page's Esmerald app, unchanged but for two lines at the end, under backbeat:
``uvicorn examples.esmerald_app:app`` (needs Esmerald 3.9.4 with Lilya < 0.21).

Esmerald alone drops the decorator's task when the handler returns a
`JSONResponse` (the page's first example) and runs tasks inline, one failure
stopping the rest. With ``backbeat.esmerald.install`` both the decorator's and the
response's tasks run, under backbeat's runner, kept in ./.backbeat/esmerald.db
(or $BACKBEAT_STORE): a reminder accepted before a kill -9 runs after the restart.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from esmerald import Esmerald, Gateway, JSONResponse, post
from esmerald.background import BackgroundTask, BackgroundTasks
from pydantic import BaseModel

from backbeat import Runner, task
from backbeat.esmerald import BackgroundTask as SupervisedTask
from backbeat.esmerald import install, status_gateways

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.esmerald_app")


class UserIn(BaseModel):
    email: str
    password: str


async def send_email_notification(message: str) -> None:
    log.info("notification sent: %s", message)


def write_in_file(email: str) -> None:
    log.info("wrote the log for %s @ %s", email, datetime.now().isoformat(timespec="seconds"))


@task(delay=float(os.environ.get("REMIND_AFTER", "2")))  # backbeat's policy, on any task
async def remind(email: str) -> None:
    log.info("reminder sent to %s", email)


@post(
    "/register",
    background=BackgroundTask(send_email_notification, message="Account created"),
)
async def create_user(data: UserIn) -> JSONResponse:
    # The reference page's example 1, with a response task of its own besides.
    reminder = BackgroundTask(remind, data.email)
    return JSONResponse({"message": "Created"}, background=reminder)


@post(
    "/register/with-log",
    background=BackgroundTasks(
        tasks=[
            BackgroundTask(send_email_notification, message="Account created"),
            BackgroundTask(write_in_file, "someone"),
        ]
    ),
)
async def create_user_with_log(data: UserIn) -> dict[str, str]:
    return {"message": "Created"}


@post(
    "/unsubscribe",
    # backbeat's class where Esmerald expects its own: mypy --strict accepts it.
    background=SupervisedTask(send_email_notification, message="Unsubscribed"),
)
async def unsubscribe(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Bye"})


runner = Runner(store=os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/esmerald.db"))
app = Esmerald(
    routes=[
        Gateway(handler=create_user),
        Gateway(handler=create_user_with_log),
        Gateway(handler=unsubscribe),
        *status_gateways(runner),
    ]
)
install(app, runner)
