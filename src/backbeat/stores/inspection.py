"""What a store gives those who look into it (the dashboard, mostly): the filter and pages of
`Store.search`, the groups of `Store.failure_groups`, the rows of `Store.gate_usage` and a
task's attempt history (`Store.attempts`).

Kept apart from `backbeat.stores.base`, what the runner and its workers need: no runner uses
these; the `Store` contract names them only in its signatures.
"""

from __future__ import annotations

from dataclasses import dataclass

from backbeat.stores.base import StoredStatus


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks `Store.search` returns: every field given must match (None: any)."""

    state: str | None = None  # as `TaskInfo` shows it: ``scheduled`` is pending, not yet due
    queue: str | None = None
    name: str | None = None
    id: str | None = None  # the start of the id (ids are upper case; matched as given)
    argument: str | None = None  # a piece of the arguments' JSON, as stored
    error: str | None = None  # a piece of the error message
    created_after: float | None = None  # seconds since the epoch, inclusive
    created_before: float | None = None  # exclusive


@dataclass(slots=True)
class TaskPage:
    """One page of `Store.search`: the matches, newest first, and where to go on."""

    tasks: list[StoredStatus]
    # Pass as `before` for the next page; None: no older task can match.
    cursor: str | None
    # How many tasks the store looked at for this page (at most `scan`).
    scanned: int


@dataclass(slots=True)
class FailureGroup:
    """Failed tasks of one name that failed with one exception type (`Store.failure_groups`)."""

    name: str
    exception: str  # the error up to its first ": " (the engine writes "Type: message")
    count: int
    latest_id: str
    latest_at: float  # when the latest of them failed
    example: str | None  # the latest one's error message


@dataclass(slots=True)
class GateUsage:
    """How much of one limit is used now (`Store.gate_usage`): a rate limit's starts in
    its current window, or a per-key concurrency limit's running tasks."""

    kind: str  # "rate" or "concurrency"
    name: str  # the task name or queue the limit belongs to
    key: str  # the key it is per ("" when the limit is not per key)
    limit: int
    window: float  # seconds, for "rate"; 0 for "concurrency"
    used: int
    waiting: int  # tasks waiting in its line


@dataclass(slots=True)
class AttemptRecord:
    """An attempt of a task that did not succeed (`Store.attempts`): a dashboard's timeline."""

    number: int  # the attempt's number (1 the first; `retry` of a dead letter starts again)
    worker: str | None
    started_at: float | None
    finished_at: float  # when it ended (for "lost": when its lease ran out)
    # "retried" (failed, retried later), "failed" (the dead letter), "lost" (its worker died
    # or hung: the lease ran out, or `take_over`), "cancelled".
    outcome: str
    error: str | None
    traceback: str | None


# How many attempts `Store.attempts` keeps per task (the latest).
ATTEMPTS_KEPT = 20
