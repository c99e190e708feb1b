"""The shop's tasks: Django's task API, nothing of backbeat."""

from __future__ import annotations

import logging

from django_tasks import task

log = logging.getLogger("shop")


@task(queue_name="mail", priority=10)
def send_welcome(email: str) -> str:
    log.info("welcome sent to %s", email)
    return f"welcome:{email}"
