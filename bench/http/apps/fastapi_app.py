"""The seed endpoint on FastAPI (its injected BackgroundTasks)."""

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel

sent = 0
app = FastAPI(openapi_url=None)


class UserIn(BaseModel):
    email: str
    password: str


async def send_email_notification(message: str) -> None:
    global sent
    sent += 1


@app.post("/register", status_code=201)
async def create_user(data: UserIn, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(send_email_notification, message="Account created")
    return {"message": "Created"}


@app.get("/sent")
async def sent_count() -> dict[str, int]:
    return {"sent": sent}
