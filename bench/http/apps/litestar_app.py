"""The seed endpoint on Litestar (decorator background task, returns a dict)."""

from litestar import Litestar, get, post
from litestar.background_tasks import BackgroundTask
from pydantic import BaseModel

sent = 0


class UserIn(BaseModel):
    email: str
    password: str


async def send_email_notification(message: str) -> None:
    global sent
    sent += 1


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> dict[str, str]:
    return {"message": "Created"}


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": sent}


app = Litestar(route_handlers=[create_user, sent_count], openapi_config=None)
