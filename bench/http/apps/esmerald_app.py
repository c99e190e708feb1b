"""The seed endpoint on Esmerald 3.9.4.

Returning a `JSONResponse` as the reference page does makes Esmerald drop the
decorator's task, so this returns a dict: the task runs (the harness checks).
"""

from common import Sent, UserIn, send_email_notification
from esmerald import BackgroundTask, Esmerald, Gateway, get, post


@post("/register", background=BackgroundTask(send_email_notification, message="Account created"))
async def create_user(data: UserIn) -> dict[str, str]:
    return {"message": "Created"}


@get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": Sent.count}


app = Esmerald(routes=[Gateway(handler=create_user), Gateway(handler=sent_count)])
