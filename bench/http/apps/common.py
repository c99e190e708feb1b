"""What every contender shares: the body model and the task (counting its runs)."""

from pydantic import BaseModel


class UserIn(BaseModel):
    email: str
    password: str


class Sent:
    count = 0


async def send_email_notification(message: str) -> None:
    Sent.count += 1
