"""The seed endpoint on backbeat: pydantic body, decorator task, 201 JSON."""

from pydantic import BaseModel

from backbeat import App, BackgroundTask, JSONResponse, get, post

sent = 0


class UserIn(BaseModel):
    email: str
    password: str


async def send_email_notification(message: str) -> None:
    global sent
    sent += 1


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> JSONResponse:
    return JSONResponse({"message": "Created"})


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": sent}


app = App(routes=[create_user, sent_count])
