"""The task filter as a query string (bookmarkable) and back: ``?name=…&state=failed…``.

Times are ISO 8601 in UTC (``2026-12-03`` or ``2026-12-03T01:30``; an offset may be given)
or seconds since the epoch. Bad input is a `BadInput` naming the field and what it takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from backbeat.status import STATES
from backbeat.stores.inspection import TaskFilter

FIELDS = ("name", "state", "queue", "id", "argument", "error", "created_from", "created_to")


class BadInput(ValueError):
    """A request's parameter that cannot be used: 400, with this message."""


def parse_filter(params: Mapping[str, str]) -> TaskFilter:
    given = {field: params.get(field, "").strip() for field in FIELDS}
    state = given["state"] or None
    if state is not None and state not in STATES:
        raise BadInput(f"state must be one of {', '.join(STATES)}; got {state!r}")
    return TaskFilter(
        state=state,
        queue=given["queue"] or None,
        name=given["name"] or None,
        id=given["id"] or None,
        argument=given["argument"] or None,
        error=given["error"] or None,
        created_after=parse_time("created_from", given["created_from"]),
        created_before=parse_time("created_to", given["created_to"]),
    )


def parse_time(field: str, text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"{field} must be a time in UTC like 2026-12-03T01:30 (or seconds since the "
            f"epoch); got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def filter_query(where: TaskFilter) -> dict[str, str]:
    """The filter as query parameters (those given only)."""
    query = {
        "name": where.name,
        "state": where.state,
        "queue": where.queue,
        "id": where.id,
        "argument": where.argument,
        "error": where.error,
        "created_from": _shown_time(where.created_after),
        "created_to": _shown_time(where.created_before),
    }
    return {key: value for key, value in query.items() if value}


def _shown_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def is_empty(where: TaskFilter) -> bool:
    return where == TaskFilter()


def parse_count(params: Mapping[str, str], field: str, default: int, low: int, high: int) -> int:
    text = params.get(field, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{field} must be a whole number; got {text!r}") from None
    if not low <= value <= high:
        raise BadInput(f"{field} must be between {low} and {high}; got {value}")
    return value
