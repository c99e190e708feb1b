"""Plain functions in a module no app declares (no @task, no handler here, not registered)."""

from tests.apps.durable_tasks import mark

sent: list[str] = []


def send_mail(to: str) -> None:
    sent.append(to)
    mark(f"mail:{to}")
