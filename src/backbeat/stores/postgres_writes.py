"""Writing tasks into the PostgreSQL store, in a transaction someone else began: the
store's enqueue, a schedule's tick (`backbeat.stores.postgres_schedules`), and the app's
own transaction (`PostgresStore.enqueue_on`, through `backbeat.stores.postgres_callers`);
and the writes to a task that may be in either table, the upkeep moving finished ones
(`backbeat.stores.postgres_maintenance`): a retry, a late progress report.

One INSERT per write whatever its size (`insert_sql`: a column per array, or one value
for a column the tasks share), which also notifies the workers; a task whose idempotency
key a live task holds is skipped by ``ON CONFLICT DO NOTHING``, which never aborts the
write (nor the transaction it is part of), and gets that task's id. The store's own
writes need no transaction of their own unless spent keys or gated lines add steps.

A write is a series of steps (`insert_steps`): each a statement and its arguments, the
next chosen from the rows the last returned. They hold no connection, so that the store's
asyncpg pool and the app's connections (psycopg, SQLAlchemy, Django's, blocking or not)
run the same statements in the same order.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

from backbeat.stores.base import DuplicateTask, NewTask
from backbeat.stores.postgres_maintenance import bring_back
from backbeat.stores.postgres_pool import asyncpg
from backbeat.stores.postgres_sql import (
    LIVE_WITH_KEYS,
    NOTIFY,
    OPEN_LINES,
    PROGRESS,
    REQUEUE,
    Schema,
    insert_sql,
)

# A retry's first step: the failed tasks of the hot table it may requeue, locked. One the
# upkeep is moving holds the move's lock till it commits: waited for here, it is in
# `finished` for the next statement (`bring_back`), which would not have seen it before.
LOCK_FAILED = (
    "SELECT id FROM {s}.tasks WHERE state = 'failed' "
    "AND ($1::text[] IS NULL OR id = ANY($1::text[])) ORDER BY id FOR UPDATE"
)
# `PROGRESS` on a task the upkeep moved (the report landed after its outcome).
PROGRESS_MOVED = "UPDATE {s}.finished SET progress = $1 WHERE id = $2 AND token = $3"
# Keys of tasks that finished since $2 (`spent_keys`, kept for the store's `key_window`).
SPENT = "SELECT key, task_id FROM {s}.spent_keys WHERE key = ANY($1::text[]) AND finished_at > $2"


def _inserted(task: NewTask) -> tuple[Any, ...]:
    """A task's values, in `INSERTED_COLUMNS`' order."""
    return (
        task.id,
        task.name,
        task.payload,
        task.retries,
        task.backoff,
        task.max_backoff,
        task.timeout,
        task.created_at,
        task.due_at,
        " ".join(task.after) or None,  # ids hold no spaces (`backbeat.ids`)
        task.held_until,
        task.queue,
        task.priority,
        task.key,
        task.rate_gate,
        task.rate_limit,
        task.rate_window,
        task.concurrency_gate,
        task.max_concurrency,
        task.line,
    )


def insert_statement(sql: Schema, tasks: list[NewTask]) -> Step:
    """`insert_sql` for these tasks, and its parameters: an array for each column whose
    value differs between them (and for ids), else the one value they share."""
    columns = list(zip(*map(_inserted, tasks), strict=True))
    arrays = tuple(
        n == 0 or column.count(column[0]) != len(column) for n, column in enumerate(columns)
    )
    parameters = [
        list(column) if array else column[0] for column, array in zip(columns, arrays, strict=True)
    ]
    return sql(insert_sql(arrays)), [*parameters, sql.channel]


T = TypeVar("T")
# A statement ($1, $2 … for its arguments, in order) and its arguments.
Step = tuple[str, list[Any]]
Rows = Sequence[Sequence[Any]]
Steps = Generator[Step, Rows, T]


def insert_steps(sql: Schema, tasks: list[NewTask], key_window: float = 0.0) -> Steps[list[str]]:
    """Insert tasks in the caller's transaction; their ids (for a task whose key a live task
    holds, or one that finished less than `key_window` seconds ago: that task's). An id that
    exists fails the INSERT (a unique violation)."""
    keys = [t.key for t in tasks if t.key is not None]
    if key_window > 0 and keys:
        spent = {
            key: task_id for key, task_id in (yield sql(SPENT), [keys, time.time() - key_window])
        }
        tasks_left = [t for t in tasks if t.key not in spent]
        ids = iter((yield from insert_steps(sql, tasks_left)) if tasks_left else [])
        return [spent[t.key] if t.key in spent else next(ids) for t in tasks]
    inserted = {row[0] for row in (yield insert_statement(sql, tasks))}
    skipped = [t.key for t in tasks if t.id not in inserted and t.key is not None]
    holders: dict[str, str] = {}
    if skipped:
        holders = {key: task_id for key, task_id in (yield sql(LIVE_WITH_KEYS), [skipped])}
    fresh = [t for t in tasks if t.id in inserted]
    gated = [t for t in fresh if t.line is not None]
    if gated:  # their lines are looked at from their due time
        yield (
            sql(OPEN_LINES),
            [
                [t.line for t in gated],
                [t.queue for t in gated],
                [t.due_at for t in gated],
            ],
        )
    return [t.id if t.id in inserted or t.key is None else holders.get(t.key, t.id) for t in tasks]


async def run_steps(steps: Steps[T], fetch: Callable[[str, list[Any]], Awaitable[Rows]]) -> T:
    """Run a write's steps on a connection (`fetch`: one statement's rows)."""
    rows: Any = None  # a generator's first step is asked for with None
    try:
        while True:
            rows = await fetch(*steps.send(rows))
    except StopIteration as done:
        result: T = done.value
        return result


def run_steps_blocking(steps: Steps[T], fetch: Callable[[str, list[Any]], Rows]) -> T:
    """`run_steps` on a blocking connection."""
    rows: Any = None
    try:
        while True:
            rows = fetch(*steps.send(rows))
    except StopIteration as done:
        result: T = done.value
        return result


async def insert_tasks(
    conn: Any, sql: Schema, tasks: list[NewTask], key_window: float = 0.0
) -> list[str]:
    """`insert_steps` on a connection of the store's pool. Raises asyncpg's
    UniqueViolationError for an id that exists."""
    steps = insert_steps(sql, tasks, key_window)
    return await run_steps(steps, lambda query, args: conn.fetch(query, *args))


async def notify(conn: Any, sql: Schema, queues: list[str]) -> None:
    """Wake the waiting workers of every process (`backbeat.stores.postgres_listen`) when
    the caller's transaction commits: once per queue (the payload; listeners ignore it).
    (A write of tasks does it in its INSERT: `insert_sql`.)"""
    await conn.execute(sql(NOTIFY), sql.channel, sorted(set(queues)))


def needs_transaction(tasks: list[NewTask], key_window: float) -> bool:
    """Whether writing these tasks takes more than the INSERT (and, for keys it skipped, a
    read of their holders): a look at spent keys first, or gated lines opened after."""
    return key_window > 0 or any(task.line is not None for task in tasks)


async def insert_groups(
    conn: Any,
    sql: Schema,
    groups: list[list[NewTask]],
    key_window: float = 0.0,
    *,
    in_transaction: bool = True,
) -> list[list[str] | BaseException]:
    """Several callers' tasks (`TurnGroup`): all in one statement, or each group alone if
    that fails (an id that exists fails its own group only). Each group's ids, or its error.

    Each try in a transaction of its own (a savepoint, in the caller's); without
    ``in_transaction``, each statement is its own (`needs_transaction` says when it may)."""
    unique = asyncpg().UniqueViolationError
    try:
        async with _maybe_transaction(conn, in_transaction):
            every = [task for group in groups for task in group]
            ids = iter(await insert_tasks(conn, sql, every, key_window))
    except unique:
        pass
    else:
        return [[next(ids) for _ in group] for group in groups]
    outcomes: list[list[str] | BaseException] = []
    for group in groups:
        try:
            async with _maybe_transaction(conn, in_transaction):
                outcomes.append(await insert_tasks(conn, sql, group, key_window))
        except unique as exc:
            outcomes.append(_duplicate(exc, group))
    return outcomes


def _maybe_transaction(conn: Any, begin: bool) -> contextlib.AbstractAsyncContextManager[Any]:
    return conn.transaction() if begin else contextlib.nullcontext()


@contextlib.contextmanager
def duplicates_named(tasks: list[NewTask]) -> Iterator[None]:
    """A write on the app's connection whose task id exists: `DuplicateTask`, as from
    `Store.enqueue`, whichever driver's error said so."""
    try:
        yield
    except Exception as exc:
        if _duplicate_id(exc):
            raise _duplicate(exc, tasks) from exc
        raise


def _duplicate_id(exc: BaseException) -> bool:
    """Whether a driver's error (or the one it wraps: SQLAlchemy's, Django's) is a task id
    that exists (a unique violation of the tasks' primary key)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "23505" and "(id)=" in _detail(seen):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def _detail(exc: BaseException) -> str:
    return str(getattr(exc, "detail", None) or exc)


def _duplicate(exc: BaseException, group: list[NewTask]) -> DuplicateTask:
    """The id that exists already (named in the server's detail), or that the write repeats."""
    named = re.search(r"\(id\)=\(([^)]*)\)", _detail(exc))
    if named is not None:
        return DuplicateTask(named.group(1))
    ids = [task.id for task in group]
    repeated = [task_id for task_id in ids if ids.count(task_id) > 1]
    return DuplicateTask(repeated[0] if repeated else ids[0])


async def requeue_failed(conn: Any, sql: Schema, ids: list[str] | None) -> list[Any]:
    """Failed tasks (these, or all) back to pending, in the hot table or in `finished`,
    whatever the upkeep is moving meanwhile; `REQUEUE`'s rows (line, queue, due)."""
    await conn.execute(sql(LOCK_FAILED), ids)  # waits for a move of any of them to end
    await bring_back(conn, sql, ids)
    rows: list[Any] = await conn.fetch(sql(REQUEUE), time.time(), ids)
    return rows


async def keep_progress(conn: Any, sql: Schema, document: str, task_id: str, token: int) -> bool:
    """A progress report on its task wherever it is: a statement per table, so that the
    second sees a move that committed while the first waited on the row."""
    for statement in (PROGRESS, PROGRESS_MOVED):
        status = await conn.execute(sql(statement), document, task_id, token)
        if status.rpartition(" ")[2] == "1":
            return True
    return False
