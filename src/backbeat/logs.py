"""The log lines about tasks, all on the ``backbeat`` logger.

Every record about one task carries the same ``extra=`` (`about_task`), so a JSON
formatter or Sentry's logging integration can group by task. The lines logged from
more than one place live here: a task's final failure, the tasks a store
dead-lettered after lost leases, and the tasks an in-process drain gave up on.
"""

from __future__ import annotations

import logging
from typing import Any

from backbeat.status import TaskRecord, TaskState

logger = logging.getLogger("backbeat")


def about_task(
    task_id: str | None, name: str | None, attempt: int | None = None, queue: str | None = None
) -> dict[str, Any]:
    """The ``extra=`` of every log record about one task: JSON formatters and Sentry's
    logging integration find these attributes on the record and group by them."""
    return {"task_id": task_id, "task_name": name, "attempt": attempt, "queue": queue}


def log_failure(
    task_id: str | None,
    name: str,
    exc: BaseException,
    attempt: int | None = None,
    queue: str | None = None,
) -> None:
    """Log a task's (final) failure at ERROR, with the traceback; `attempt` is its last."""
    logger.error(
        "Background task %r (id %s) failed%s: %s: %s",
        name,
        task_id,
        f" after {attempt} attempts" if attempt and attempt > 1 else "",
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra=about_task(task_id, name, attempt, queue),
    )


def log_dead_letters(dead: list[tuple[str, str, str]] | list[list[str]]) -> None:
    """Log the (id, name, error) of tasks a claim dead-lettered (lost their lease too often)."""
    for task_id, name, error in dead:
        logger.error(
            "Background task %r (id %s) failed: %s",
            name,
            task_id,
            error,
            extra=about_task(task_id, name),
        )


def log_lost(lost: list[tuple[TaskRecord, TaskState]], shutdown_timeout: float) -> None:
    """The drain cancelled these unfinished tasks (with the state each was in): say so."""
    for record, was in lost:
        logger.error(
            "Task %r (id %s) lost at shutdown: it was %s",
            record.name,
            record.id,
            was,
            extra=about_task(record.id, record.name, record.attempts, record.queue),
        )
    if lost:
        logger.error(
            "backbeat runner: %d task(s) not finished within shutdown_timeout=%.1fs were "
            "cancelled and lost (this runner has no store)",
            len(lost),
            shutdown_timeout,
        )
