"""The seed endpoint on FastAPI (its injected BackgroundTasks)."""

from common import Sent, UserIn, send_email_notification
from fastapi import BackgroundTasks, FastAPI

app = FastAPI(openapi_url=None)


@app.post("/register", status_code=201)
async def create_user(data: UserIn, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(send_email_notification, message="Account created")
    return {"message": "Created"}


@app.get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": Sent.count}
