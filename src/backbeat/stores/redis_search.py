"""The Redis store's dashboard reads: `search`, `failure_groups`, `oldest_due`, each made of
steps of `redis.lua` (`RedisStore` passes its `_call`, which runs one).

A search goes through the script's ``search`` step in stretches of at most `_SEARCH_STRETCH`
tasks looked at, each stretch going on from the cursor the last one left: one script call
blocks Redis for everyone, so a long scan is cut into calls that others' commands come
between.
"""

from __future__ import annotations

import time
from typing import Any

from backbeat.stores.inspection import FailureGroup, TaskFilter, TaskPage
from backbeat.stores.redis_rows import STATUS_FIELDS, Step, number, optional, status
from backbeat.stores.searching import check_scan, check_search, id_range, sort_groups

# The most tasks one call of the script's search looks at (a few milliseconds of Redis).
_SEARCH_STRETCH = 1_000


async def search(
    call: Step, where: TaskFilter, limit: int, before: str | None, scan: int
) -> TaskPage:
    check_search(where, limit, scan)
    bounds = id_range(where, before)
    if bounds.empty:
        return TaskPage([], None, 0)
    rows: list[list[Any]] = []
    scanned, below = 0, bounds.below
    while True:
        cursor, looked, found = await call(
            "search",
            time.time(),
            where.state or "",
            where.queue or "",
            where.name or "",
            where.id or "",
            where.argument or "",
            where.error or "",
            below or "",
            bounds.lowest or "",
            limit - len(rows),
            scan,
            min(scan - scanned, _SEARCH_STRETCH),
            *STATUS_FIELDS,
        )
        rows += found
        scanned += int(looked)
        if not cursor or len(rows) == limit or scanned >= scan:
            break
        below = cursor
    # A record changed outside backbeat may have lost its name or state: left out.
    tasks = [status(row[0], row[1:]) for row in rows if row[1] and row[2]]
    return TaskPage(tasks, cursor or None, scanned)


async def failure_groups(call: Step, scan: int) -> list[FailureGroup]:
    check_scan(scan)
    return sort_groups(
        FailureGroup(name, exception, int(count), latest, float(at), optional(error))
        for name, exception, count, latest, at, error in await call("failure_groups", scan)
    )


async def oldest_due(call: Step, queue: str | None) -> float | None:
    return number(await call("oldest_due", time.time(), queue or ""))
