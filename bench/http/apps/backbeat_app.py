"""The seed endpoint on backbeat: pydantic body, decorator task, 201 JSON."""

from common import Sent, UserIn, send_email_notification

from backbeat import App, BackgroundTask, JSONResponse, get, post


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Created"})


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": Sent.count}


app = App(routes=[create_user, sent_count])
