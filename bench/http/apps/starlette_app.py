"""The seed endpoint written by hand on Starlette, with the same validation rules."""

import asyncio

from common import Sent, UserIn, send_email_notification
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def create_user(request: Request) -> JSONResponse:
    try:
        data = UserIn.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": exc.errors(include_url=False)}, status_code=422)
    assert data.email
    return JSONResponse(
        {"message": "Created"},
        status_code=201,
        background=BackgroundTask(send_email_notification, message="Account created"),
    )


async def slow_email(message: str) -> None:
    await asyncio.sleep(1)
    await send_email_notification(message)


async def create_user_slow_task(request: Request) -> JSONResponse:
    try:
        UserIn.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": exc.errors(include_url=False)}, status_code=422)
    return JSONResponse(
        {"message": "Created"},
        status_code=201,
        background=BackgroundTask(slow_email, message="Account created"),
    )


async def sent_count(request: Request) -> JSONResponse:
    return JSONResponse({"sent": Sent.count})


app = Starlette(
    routes=[
        Route("/register", create_user, methods=["POST"]),
        Route("/register/slow-task", create_user_slow_task, methods=["POST"]),
        Route("/sent", sent_count),
    ]
)


# The floor for handing tasks off: fire-and-forget with asyncio.create_task, as
# people write it by hand (no limits, status, retries or drain; tasks can be
# garbage-collected mid-flight and are lost on shutdown).
_fired: set[asyncio.Task[None]] = set()


async def create_user_fire_and_forget(request: Request) -> JSONResponse:
    try:
        UserIn.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": exc.errors(include_url=False)}, status_code=422)
    fired = asyncio.create_task(send_email_notification(message="Account created"))
    _fired.add(fired)
    fired.add_done_callback(_fired.discard)
    return JSONResponse({"message": "Created"}, status_code=201)


fire_and_forget_app = Starlette(
    routes=[
        Route("/register", create_user_fire_and_forget, methods=["POST"]),
        Route("/sent", sent_count),
    ]
)
