"""FastAPI under BackbeatMiddleware with a store (set by env vars), for the process tests."""

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from backbeat import BackbeatMiddleware, BackgroundTask, Runner
from tests.apps.durable_tasks import mark

api = FastAPI()


def audit(label: str) -> None:
    """A plain function next to the handlers."""
    mark(label)


@api.post("/good")
async def good(label: str) -> JSONResponse:
    job = BackgroundTask(audit, label)
    return JSONResponse({"id": job.id}, background=job)


@api.post("/closure")
async def closure(label: str) -> JSONResponse:
    def inner() -> None:
        mark(label)

    return JSONResponse({"ok": True}, background=BackgroundTask(inner))


@api.post("/not-json")
async def not_json(label: str) -> JSONResponse:
    return JSONResponse({"ok": True}, background=BackgroundTask(audit, object()))


runner = Runner(store=os.environ["BACKBEAT_TEST_STORE"], poll_interval=0.2)
app = BackbeatMiddleware(api, runner=runner)
