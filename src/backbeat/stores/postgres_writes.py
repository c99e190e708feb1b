"""Writing tasks into the PostgreSQL store, in a transaction someone else began: the
store's enqueue and a schedule's tick (`backbeat.stores.postgres_schedules`).

One INSERT per write whatever its size (a column per array); a task whose idempotency key
a live task holds is skipped by ``ON CONFLICT DO NOTHING``, which never aborts the write
(nor the transaction it is part of), and gets that task's id.
"""

from __future__ import annotations

import re
import time
from typing import Any

from backbeat.stores.base import DuplicateTask, NewTask
from backbeat.stores.postgres_pool import asyncpg
from backbeat.stores.postgres_sql import INSERT, LIVE_WITH_KEYS, NOTIFY, OPEN_LINES, Schema

# Keys of tasks that finished since $2 (`spent_keys`, kept for the store's `key_window`).
SPENT = "SELECT key, task_id FROM {s}.spent_keys WHERE key = ANY($1::text[]) AND finished_at > $2"


def _columns(tasks: list[NewTask]) -> list[list[Any]]:
    """`INSERT`'s parameters: one array per column."""
    return [
        [t.id for t in tasks],
        [t.name for t in tasks],
        [t.payload for t in tasks],
        [t.retries for t in tasks],
        [t.backoff for t in tasks],
        [t.max_backoff for t in tasks],
        [t.timeout for t in tasks],
        [t.created_at for t in tasks],
        [t.due_at for t in tasks],
        # Ids hold no spaces (`backbeat.ids`): each list of them travels as one string.
        [" ".join(t.after) or None for t in tasks],
        [t.held_until for t in tasks],
        [t.queue for t in tasks],
        [t.priority for t in tasks],
        [t.key for t in tasks],
        [t.rate_gate for t in tasks],
        [t.rate_limit for t in tasks],
        [t.rate_window for t in tasks],
        [t.concurrency_gate for t in tasks],
        [t.max_concurrency for t in tasks],
        [t.line for t in tasks],
    ]


async def insert_tasks(
    conn: Any, sql: Schema, tasks: list[NewTask], key_window: float = 0.0
) -> list[str]:
    """Insert tasks in the caller's transaction; their ids (for a task whose key a live task
    holds, or one that finished less than `key_window` seconds ago: that task's). Raises
    asyncpg's UniqueViolationError for an id that exists."""
    spent: dict[str, str] = {}
    keys = [t.key for t in tasks if t.key is not None]
    if key_window > 0 and keys:
        spent = dict(await conn.fetch(sql(SPENT), keys, time.time() - key_window))
        tasks_left = [t for t in tasks if t.key not in spent]
        ids = iter(await insert_tasks(conn, sql, tasks_left) if tasks_left else [])
        return [spent[t.key] if t.key in spent else next(ids) for t in tasks]
    inserted = {row[0] for row in await conn.fetch(sql(INSERT), *_columns(tasks))}
    skipped = [t.key for t in tasks if t.id not in inserted and t.key is not None]
    holders: dict[str, str] = {}
    if skipped:
        holders = dict(await conn.fetch(sql(LIVE_WITH_KEYS), skipped))
    fresh = [t for t in tasks if t.id in inserted]
    gated = [t for t in fresh if t.line is not None]
    if gated:  # their lines are looked at from their due time
        await conn.execute(
            sql(OPEN_LINES),
            [t.line for t in gated],
            [t.queue for t in gated],
            [t.due_at for t in gated],
        )
    runnable = [t.queue for t in fresh if t.held_until is None]
    if runnable:
        await notify(conn, sql, runnable)
    return [t.id if t.id in inserted or t.key is None else holders.get(t.key, t.id) for t in tasks]


async def notify(conn: Any, sql: Schema, queues: list[str]) -> None:
    """Wake the waiting workers of every process (`backbeat.stores.postgres_listen`) when
    the caller's transaction commits: once per queue (the payload; listeners ignore it)."""
    await conn.execute(sql(NOTIFY), sql.channel, sorted(set(queues)))


async def insert_groups(
    conn: Any, sql: Schema, groups: list[list[NewTask]], key_window: float = 0.0
) -> list[list[str] | BaseException]:
    """Several callers' tasks (`TurnGroup`): all in one statement, or each group alone if
    that fails (an id that exists fails its own group only). Each group's ids, or its error."""
    unique = asyncpg().UniqueViolationError
    try:
        async with conn.transaction():
            every = [task for group in groups for task in group]
            ids = iter(await insert_tasks(conn, sql, every, key_window))
    except unique:
        pass
    else:
        return [[next(ids) for _ in group] for group in groups]
    outcomes: list[list[str] | BaseException] = []
    for group in groups:
        try:
            async with conn.transaction():
                outcomes.append(await insert_tasks(conn, sql, group, key_window))
        except unique as exc:
            outcomes.append(_duplicate(exc, group))
    return outcomes


def _duplicate(exc: Exception, group: list[NewTask]) -> DuplicateTask:
    """The id that exists already (named in the server's detail), or that the write repeats."""
    named = re.search(r"\(id\)=\(([^)]*)\)", getattr(exc, "detail", None) or str(exc))
    if named is not None:
        return DuplicateTask(named.group(1))
    ids = [task.id for task in group]
    repeated = [task_id for task_id in ids if ids.count(task_id) > 1]
    return DuplicateTask(repeated[0] if repeated else ids[0])
