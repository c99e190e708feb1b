"""The Redis store's lists and dashboard reads: `list_tasks`' ids, `search`, `failure_groups`,
`oldest_due`, each made of steps of `redis.lua` (`RedisStore` passes its `_call`, which runs
one).

A search goes through the script's ``search`` step in stretches of at most `_SEARCH_STRETCH`
tasks looked at, each stretch going on from the cursor the last one left: one script call
blocks Redis for everyone, so a long scan is cut into calls that others' commands come
between.
"""

from __future__ import annotations

import time
from typing import Any

from backbeat.stores.inspection import FailureGroup, TaskFilter, TaskPage
from backbeat.stores.redis_rows import STATUS_FIELDS, Step, number, optional, status, text
from backbeat.stores.searching import check_scan, check_search, id_range, sort_groups

# The most tasks one call of the script's search looks at (a few milliseconds of Redis).
_SEARCH_STRETCH = 1_000
# `list_tasks` looks at this many ids per call of the script, and this many in all.
_LIST_PAGE = 1_000
_LIST_SCAN = 100_000


async def list_ids(
    call: Step,
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    before: str | None,
) -> list[str]:
    """The ids of `Store.list_tasks`, page by page through the script's ``list`` step: a
    list whose matches are rare never blocks Redis for long, and stops after `_LIST_SCAN`."""
    ids: list[str] = []
    below, looked = before or "", 0
    while len(ids) < limit and looked < _LIST_SCAN:
        cursor, found = await call(
            "list", time.time(), state or "", queue or "", name or "", limit - len(ids), below,
            _LIST_PAGE,
        )  # fmt: skip
        ids += [text(task_id) for task_id in found]
        looked += _LIST_PAGE
        if not cursor:
            break
        below = text(cursor)
    return ids


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
