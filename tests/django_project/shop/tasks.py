"""Tasks as a Django project writes them: Django's `@task`, nothing of backbeat."""

from __future__ import annotations

from django_tasks import task


@task(queue_name="mail", priority=10)
def send_welcome(email: str, *, shout: bool = False) -> str:
    greeting = f"welcome {email}"
    return greeting.upper() if shout else greeting


@task()
def refuse(amount: int) -> None:
    raise ValueError(f"cannot refund {amount}")


@task()
async def count_async(numbers: list[int]) -> int:
    return sum(numbers)
