"""The seed endpoint on Litestar (decorator background task, returns a dict)."""

from common import Sent, UserIn, send_email_notification
from litestar import Litestar, get, post
from litestar.background_tasks import BackgroundTask


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> dict[str, str]:
    return {"message": "Created"}


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": Sent.count}


app = Litestar(route_handlers=[create_user, sent_count], openapi_config=None)
