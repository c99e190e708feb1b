"""An App whose routes sit under a Starlette `Mount` (store and problems set by env vars).

``BACKBEAT_TEST_PROBLEMS=1`` adds routes whose tasks no store can run: `backbeat check`
and the start-up check must list them.
"""

import os

from starlette.applications import Starlette
from starlette.routing import Mount

from backbeat import App, BackbeatMiddleware, BackgroundTask, Runner, post
from tests.apps.mail_helpers import send_mail


@post("/welcome", background=BackgroundTask(send_mail, "ann@example.com"))
async def welcome() -> dict[str, bool]:
    return {"ok": True}


def make_closure_task() -> BackgroundTask:
    def remind() -> None: ...

    return BackgroundTask(remind)


routes = [welcome]
if os.environ.get("BACKBEAT_TEST_PROBLEMS") == "1":

    @post("/remind", background=make_closure_task())
    async def remind() -> None: ...

    @post("/later", background=BackgroundTask(lambda: None))
    async def later() -> None: ...

    routes += [remind, later]


def make_runner() -> Runner:
    store = os.environ.get("BACKBEAT_TEST_STORE")
    execute = os.environ.get("BACKBEAT_TEST_EXECUTE", "1") == "1"
    return Runner(store=store, execute=execute, poll_interval=0.2) if store else Runner()


app = App(routes=[Mount("/api", routes=routes)], runner=make_runner())
# The same routes in a Starlette app under the middleware.
wrapped = BackbeatMiddleware(Starlette(routes=[Mount("/api", routes=routes)]), make_runner())
