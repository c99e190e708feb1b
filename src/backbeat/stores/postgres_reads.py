"""What the PostgreSQL store gives those who look into it: counts, lists, the dashboard's
search and failure groups, the usage of limits, a task's attempts.

Counts read no history: the live tasks are counted on their partial indexes (a waiting
task's due time decides whether it shows as pending or scheduled), the finished ones in
``finished_counts``, kept by a trigger (`backbeat.stores.postgres_sql`).

A search walks ids newest first inside the range its filter and cursor allow
(`backbeat.stores.searching`), over the tasks of the state asked for (or all), reading at
most `scan` of them as (id, whether it matches) in a cursor that stops at the page's
end; only the matches are read whole.
"""

from __future__ import annotations

import time
from typing import Any

from backbeat.status import STATES
from backbeat.stores.base import StoredStatus
from backbeat.stores.gate_usage import busiest, window_of
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage
from backbeat.stores.postgres_sql import Schema
from backbeat.stores.searching import id_range, sort_groups, stored_states
from backbeat.stores.states import shown_state

STATUS_COLUMNS = (
    "id, name, state, attempts, error, traceback, created_at, started_at, finished_at, due_at, "
    "result, progress, queue, payload, worker, priority"
)
# Live or finished: a task is in `tasks` or in `finished` (`postgres_maintenance`).
GET = f"SELECT {STATUS_COLUMNS}, after FROM {{s}}.every_task WHERE id = $1"

# (stored state, a due time, count): the live tasks, one part per partial index; then the
# finished, counted. The waiting ones come in two groups, due and not yet, each with a due
# time of its own side of $1, from which `shown_state` tells pending from scheduled.
_WAITING = (
    "SELECT '{state}', min(due_at), count(*) FROM {{s}}.tasks WHERE state = '{state}' "
    "AND ($2::text IS NULL OR queue = $2) GROUP BY due_at > $1"
)
COUNTS = " UNION ALL ".join(
    [
        _WAITING.format(state="pending"),
        _WAITING.format(state="held"),
        "SELECT 'running', 0, count(*) FROM {s}.tasks WHERE state = 'running' "
        "AND ($2::text IS NULL OR queue = $2)",
        "SELECT state, 0, sum(n) FROM {s}.finished_counts "
        "WHERE ($2::text IS NULL OR queue = $2) GROUP BY state",
    ]
)
QUEUES = (
    "SELECT queue FROM {s}.finished_counts GROUP BY queue HAVING sum(n) > 0 "
    "UNION SELECT queue FROM {s}.tasks WHERE state IN ('pending', 'held', 'running') "
    "ORDER BY queue"
)


async def counts(conn: Any, sql: Schema, queue: str | None) -> dict[str, int]:
    now = time.time()
    found = dict.fromkeys(STATES, 0)
    for state, due_at, count in await conn.fetch(sql(COUNTS), now, queue):
        found[shown_state(state, due_at, now)] += int(count)
    return found


def _state_clause(state: str | None, parameters: list[Any]) -> str | None:
    """A state as `TaskInfo` shows it, as a condition on the stored one."""
    if state is None:
        return None
    parameters.append(list(stored_states(state)))
    clause = f"state = ANY(${len(parameters)}::text[])"
    if state in ("pending", "scheduled"):
        parameters.append(time.time())
        clause += f" AND due_at {'>' if state == 'scheduled' else '<='} ${len(parameters)}"
    return clause


async def list_tasks(
    conn: Any,
    sql: Schema,
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    before: str | None,
) -> list[StoredStatus]:
    """`Store.list_tasks`: newest first, optionally of one state, queue or name."""
    parameters: list[Any] = []
    clauses = [_state_clause(state, parameters)]
    for condition, value in (("queue = {}", queue), ("name = {}", name), ("id < {}", before)):
        if value is not None:
            parameters.append(value)
            clauses.append(condition.format(f"${len(parameters)}"))
    where = " AND ".join(clause for clause in clauses if clause) or "true"
    parameters.append(limit)
    query = (
        f"SELECT {STATUS_COLUMNS} FROM {{s}}.every_task WHERE {where} "
        f"ORDER BY id DESC LIMIT ${len(parameters)}"
    )
    return [StoredStatus(*row) for row in await conn.fetch(sql(query), *parameters)]


# A filter's fields other than its state, each with its condition when given.
_CONDITIONS = (
    ("queue", "queue = {}"),
    ("name", "name = {}"),
    ("id", "starts_with(id, {})"),
    ("argument", "strpos(payload, {}) > 0"),
    ("error", "coalesce(strpos(error, {}), 0) > 0"),
)


async def search(
    conn: Any, sql: Schema, where: TaskFilter, limit: int, before: str | None, scan: int
) -> TaskPage:
    """One page of `Store.search` (checked by the caller), in the caller's transaction."""
    bounds = id_range(where, before)
    if bounds.empty:
        return TaskPage([], None, 0)
    parameters: list[Any] = []
    source = [_state_clause(where.state, parameters)]
    for bound, operator in ((bounds.below, "<"), (bounds.lowest, ">=")):
        if bound is not None:
            parameters.append(bound)
            source.append(f"id {operator} ${len(parameters)}")
    matches = []
    for field, condition in _CONDITIONS:
        value = getattr(where, field)
        if value is not None:
            parameters.append(value)
            matches.append(condition.format(f"${len(parameters)}"))
    parameters.append(scan)
    query = (
        f"SELECT id, {' AND '.join(matches) or 'true'} FROM {{s}}.every_task "
        f"WHERE {' AND '.join(clause for clause in source if clause) or 'true'} "
        f"ORDER BY id DESC LIMIT ${len(parameters)}"
    )
    found: list[str] = []
    scanned = 0
    cursor: str | None = None
    async for task_id, hit in conn.cursor(sql(query), *parameters, prefetch=500):
        scanned += 1
        if hit:
            found.append(task_id)
        if len(found) == limit or scanned == scan:
            cursor = task_id
            break
    rows = await conn.fetch(
        sql(f"SELECT {STATUS_COLUMNS} FROM {{s}}.every_task WHERE id = ANY($1) ORDER BY id DESC"),
        found,
    )
    return TaskPage([StoredStatus(*row) for row in rows], cursor, scanned)


# The newest `scan` failed tasks by their id index, grouped: each group with its latest
# failure's id, time and error.
_FAILURE_GROUPS = """
SELECT name, exception, count(*), (array_agg(id ORDER BY finished_at DESC, id DESC))[1],
    max(finished_at), (array_agg(error ORDER BY finished_at DESC, id DESC))[1]
FROM (
    SELECT name, error, id, finished_at,
        CASE WHEN error IS NULL THEN ''
             WHEN strpos(error, ': ') > 0 THEN left(error, strpos(error, ': ') - 1)
             ELSE error END AS exception
    FROM {s}.every_task WHERE state = 'failed' ORDER BY id DESC LIMIT $1
) f GROUP BY name, exception
"""


async def failure_groups(conn: Any, sql: Schema, scan: int) -> list[FailureGroup]:
    rows = await conn.fetch(sql(_FAILURE_GROUPS), scan)
    return sort_groups(
        FailureGroup(name, exception, count, latest_id, latest_at or 0.0, error)
        for name, exception, count, latest_id, latest_at, error in rows
    )


OLDEST_DUE = (
    "SELECT min(due_at) FROM {s}.tasks WHERE state = 'pending' AND due_at <= $1 "
    "AND ($2::text IS NULL OR queue = $2)"
)

# Each rate gate that started a task in the longest window, and its latest start: only those
# whose latest start is inside their own window are counted.
_RATE_GATES = "SELECT gate, max(at) FROM {s}.gate_starts WHERE at > $1 GROUP BY gate"
_STARTS_SINCE = "SELECT count(*) FROM {s}.gate_starts WHERE gate = $1 AND at > $2"
_HOLDERS = (
    "SELECT concurrency_gate, count(*) FROM {s}.tasks WHERE state = 'running' "
    "AND concurrency_gate IS NOT NULL GROUP BY concurrency_gate"
)
_WAITING = (
    "SELECT min(rate_gate), min(concurrency_gate), count(*) FROM {s}.tasks "
    "WHERE line IS NOT NULL AND state IN ('pending', 'held') GROUP BY line"
)


async def gate_usage(conn: Any, sql: Schema, longest_window: float) -> list[GateUsage]:
    """Starts per rate gate in its window, running tasks per concurrency gate, waiting tasks
    per line (both of its gates), in the caller's transaction."""
    now = time.time()
    used: dict[str, int] = {}
    for gate, latest in await conn.fetch(sql(_RATE_GATES), now - longest_window):
        window = window_of(gate)
        if window is not None and latest > now - window:
            used[gate] = await conn.fetchval(sql(_STARTS_SINCE), gate, now - window)
    for gate, count in await conn.fetch(sql(_HOLDERS)):
        used[gate] = count
    waiting: dict[str, int] = {}
    for rate_gate, concurrency_gate, count in await conn.fetch(sql(_WAITING)):
        for gate in (rate_gate, concurrency_gate):
            if gate is not None:
                waiting[gate] = waiting.get(gate, 0) + count
    return busiest(used, waiting)


ATTEMPTS = (
    "SELECT number, worker, started_at, finished_at, outcome, error, traceback "
    "FROM {s}.attempts WHERE task_id = $1 ORDER BY seq"
)


def attempt_records(rows: list[Any]) -> list[AttemptRecord]:
    return [AttemptRecord(*row) for row in rows]
