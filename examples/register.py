"""The reference page's two examples, runnable: `make demo` serves this app.

Only three things differ from the page: the handlers `return` their response
(the page's snippet forgets to), `send_notification` exists (it pretends to
talk to a mail server for a second), and the app's runner keeps its tasks in
a SQLite file (``./.backbeat/tasks.db``, or $BACKBEAT_STORE): stop the server
while a task waits (Ctrl-C, or even kill -9) and it runs when you start it again.
"""

import asyncio
import logging
import os
from datetime import datetime

from pydantic import BaseModel

from backbeat import (
    App,
    BackgroundTask,
    BackgroundTasks,
    JSONResponse,
    Runner,
    post,
    status_route,
)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.register")


class UserIn(BaseModel):
    email: str
    password: str


async def send_notification(message: str) -> None:
    await asyncio.sleep(1)  # the mail server is slow; the client does not wait for it
    log.info("notification sent: %s", message)


async def send_email_notification(message: str):
    """
    Sends an email notification
    """
    await send_notification(message)


def write_in_file():
    with open("log.txt", mode="w") as log_file:
        now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        content = f"Notification sent @ {now}"
        log_file.write(content)
    log.info("wrote log.txt: %s", content)


# Example 1: a single BackgroundTask.
@post(
    "/register",
    background=BackgroundTask(send_email_notification, message="Account created"),
)
async def create_user(data: UserIn) -> JSONResponse:
    log.info("registering %s", data.email)
    return JSONResponse({"message": "Created"})


# Example 2: BackgroundTasks, run in order after the response.
@post(
    "/register/with-log",
    background=BackgroundTasks(
        tasks=[
            BackgroundTask(send_email_notification, message="Account created"),
            BackgroundTask(write_in_file),
        ]
    ),
)
async def create_user_with_log(data: UserIn) -> JSONResponse:
    log.info("registering %s", data.email)
    return JSONResponse({"message": "Created"})


# A short lease, so that after a kill -9 the demo picks its tasks up again within seconds.
runner = Runner(store=os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/tasks.db"), lease=5)
app = App(routes=[create_user, create_user_with_log, status_route(runner)], runner=runner)
