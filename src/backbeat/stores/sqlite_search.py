"""The SQLite store's dashboard reads and acts, in SQL: `search`, `failure_groups`,
`oldest_due` (reads, each in one read transaction) and `run_now`, `delete` (writes, each
in the caller's write transaction).

A search walks ids newest first inside the range its filter and cursor allow
(`backbeat.stores.searching`), over one of these sources, each read lazily and abandoned
as soon as the page is full or `scan` tasks were looked at:

* every task, by the primary key;
* the failed or the cancelled tasks, by their partial indexes on the id (a task enters
  one only when it fails or is cancelled: the hot path writes nothing more);
* the live tasks of the state asked for (held and pending, or running), by their partial
  indexes, when there are no more of them than `scan`: read, then sorted by id. A
  larger backlog is walked by the primary key instead (each task looked at counts).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backbeat.stores.base import StoredStatus
from backbeat.stores.inspection import FailureGroup, TaskFilter, TaskPage
from backbeat.stores.searching import IdRange, id_range, sort_groups, stored_states, walk
from backbeat.stores.sqlite_gates import OPEN_LINE
from backbeat.stores.sqlite_sql import STATUS_COLUMNS, shown_as

# States with a partial index on the id (`INDEXES` in sqlite_sql).
_ID_INDEXED = ("failed", "cancelled")
_LIVE_INDEXES = {
    "held": "backbeat_held_until",
    "pending": "backbeat_pending",
    "running": "backbeat_running",
}
# The live states' partial indexes, by stored state: counting one reads only the index.
_LIVE_COUNT = "SELECT count(*) FROM (SELECT 1 FROM backbeat_tasks WHERE state = '{}' LIMIT ?)"


# A filter's fields other than its state, each with its condition when given.
_CONDITIONS = (
    ("queue", "queue = :queue"),
    ("name", "name = :name"),
    ("id", "substr(id, 1, length(:id)) = :id"),
    ("argument", "instr(payload, :argument) > 0"),
    ("error", "coalesce(instr(error, :error), 0) > 0"),
)


def _matches(where: TaskFilter) -> str:
    """The filter as one SQL condition on a row (named parameters from `_parameters`)."""
    clauses = [] if where.state is None else [shown_as(where.state)]
    clauses += [sql for field, sql in _CONDITIONS if getattr(where, field) is not None]
    return " AND ".join(clauses) or "1"


def _range(bounds: IdRange) -> str:
    clauses = []
    if bounds.below is not None:
        clauses.append("id < :below")
    if bounds.lowest is not None:
        clauses.append("id >= :lowest")
    return " AND ".join(clauses) or "1"


def _live_few(conn: sqlite3.Connection, states: tuple[str, ...], scan: int) -> bool:
    """Whether these live states hold no more than `scan` tasks (reading at most scan + 1
    entries of their indexes)."""
    total = 0
    for state in states:
        total += conn.execute(_LIVE_COUNT.format(state), (scan + 1 - total,)).fetchone()[0]
        if total > scan:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Source:
    """Where candidates come from, newest first: `select(columns, more)` is a SELECT of at
    most `scan` of them (`more`: a further condition). `few`: the tasks of a live state,
    fewer than `scan`, each read costing a row's look-up (read them once)."""

    select: Callable[[str, str], str]
    few: bool = False


def _source(conn: sqlite3.Connection, where: TaskFilter, bounds: IdRange, scan: int) -> _Source:
    """The cheapest source of candidates for this filter."""
    within = _range(bounds)
    state = where.state
    if state in _ID_INDEXED:
        return _Source(
            lambda columns, more: (
                f"SELECT {columns} FROM backbeat_tasks WHERE state = :state AND {within}{more} "
                "ORDER BY id DESC LIMIT :scan"
            )
        )
    if state in ("pending", "scheduled", "running") and _live_few(conn, stored_states(state), scan):
        # One part per partial index, named: left to itself, the planner pushes the
        # ORDER BY into each part and walks every task by the primary key for a few.
        return _Source(
            lambda columns, more: (
                "SELECT * FROM ("
                + " UNION ALL ".join(
                    f"SELECT {columns} FROM backbeat_tasks INDEXED BY {_LIVE_INDEXES[s]} "
                    f"WHERE state = '{s}' AND {within}{more}"
                    for s in stored_states(state)
                )
                + ") ORDER BY id DESC LIMIT :scan"
            ),
            few=True,
        )
    return _Source(
        lambda columns, more: (
            f"SELECT {columns} FROM backbeat_tasks WHERE {within}{more} "
            "ORDER BY id DESC LIMIT :scan"
        )
    )


def _parameters(
    where: TaskFilter, bounds: IdRange, limit: int, scan: int, now: float
) -> dict[str, Any]:
    return {
        "now": now,
        "state": where.state,
        "queue": where.queue,
        "name": where.name,
        "id": where.id,
        "argument": where.argument,
        "error": where.error,
        "below": bounds.below,
        "lowest": bounds.lowest,
        "limit": limit,
        "scan": scan,
        "last": None,
    }


def search(
    conn: sqlite3.Connection,
    where: TaskFilter,
    limit: int,
    before: str | None,
    scan: int,
    now: float,
) -> TaskPage:
    """One page of `Store.search` (checked by the caller), in one read transaction."""
    bounds = id_range(where, before)
    if bounds.empty:
        return TaskPage([], None, 0)
    parameters = _parameters(where, bounds, limit, scan, now)
    conn.execute("BEGIN")
    try:
        source = _source(conn, where, bounds, scan)
        pick = _walked if source.few else _picked
        page = pick(conn, source, where, parameters)
    finally:
        conn.execute("COMMIT")
    return page


def _rows(conn: sqlite3.Connection, ids: list[str]) -> list[StoredStatus]:
    marks = ", ".join("?" for _ in ids)
    sql = f"SELECT {STATUS_COLUMNS} FROM backbeat_tasks WHERE id IN ({marks}) ORDER BY id DESC"
    return [StoredStatus(*row) for row in conn.execute(sql, ids).fetchall()]


def _walked(
    conn: sqlite3.Connection, source: _Source, where: TaskFilter, parameters: dict[str, Any]
) -> TaskPage:
    """A live state's few tasks: read once, with whether each matches, and walked here."""
    candidates = conn.execute(source.select(f"id, {_matches(where)}", ""), parameters).fetchall()
    found, cursor, scanned = walk(
        candidates, lambda row: row[0], lambda row: row[1], parameters["limit"], parameters["scan"]
    )
    return TaskPage(_rows(conn, [row[0] for row in found]), cursor, scanned)


def _picked(
    conn: sqlite3.Connection, source: _Source, where: TaskFilter, parameters: dict[str, Any]
) -> TaskPage:
    """The matches picked in SQL (a row that does not match never reaches Python); how
    many were looked at, and where to go on, then counted on the source's index alone."""
    hits = source.select(f"id, {_matches(where)} AS hit", "")
    rows = conn.execute(
        f"SELECT {STATUS_COLUMNS} FROM backbeat_tasks WHERE id IN "
        f"(SELECT id FROM ({hits}) WHERE hit LIMIT :limit) ORDER BY id DESC",
        parameters,
    ).fetchall()
    cursor: str | None
    if len(rows) == parameters["limit"]:
        cursor = parameters["last"] = rows[-1][0]
        looked = f"SELECT count(*) FROM ({source.select('id', ' AND id >= :last')})"
        scanned = conn.execute(looked, parameters).fetchone()[0]
    else:
        looked = f"SELECT count(*), min(id) FROM ({source.select('id', '')})"
        scanned, cursor = conn.execute(looked, parameters).fetchone()
        if scanned < parameters["scan"]:
            cursor = None  # the source ran out first: nothing older can match
    return TaskPage([StoredStatus(*row) for row in rows], cursor, scanned)


# The newest `scan` failed tasks by their id index, grouped; SQLite takes a bare column of
# a max() query from the row holding the max: the latest failure's id and error.
_FAILURE_GROUPS = """
SELECT name, exception, count(*), id, max(finished_at), error FROM (
    SELECT name, error, id, finished_at,
        CASE WHEN error IS NULL THEN ''
             WHEN instr(error, ': ') > 0 THEN substr(error, 1, instr(error, ': ') - 1)
             ELSE error END AS exception
    FROM backbeat_tasks WHERE state = 'failed' ORDER BY id DESC LIMIT ?
) GROUP BY name, exception
"""


def failure_groups(conn: sqlite3.Connection, scan: int) -> list[FailureGroup]:
    """`Store.failure_groups` (checked by the caller), in one statement."""
    return sort_groups(
        FailureGroup(name, exception, count, latest_id, latest_at or 0.0, error)
        for name, exception, count, latest_id, latest_at, error in conn.execute(
            _FAILURE_GROUPS, (scan,)
        ).fetchall()
    )


_OLDEST_DUE = (
    "SELECT due_at FROM backbeat_tasks WHERE state = 'pending' AND due_at <= :now "
    "AND (:queue IS NULL OR queue = :queue) ORDER BY due_at LIMIT 1"
)


def oldest_due(conn: sqlite3.Connection, queue: str | None, now: float) -> float | None:
    row = conn.execute(_OLDEST_DUE, {"now": now, "queue": queue}).fetchone()
    return None if row is None else float(row[0])


# Due now, as if the wait were over.
RUN_NOW = (
    "UPDATE backbeat_tasks SET due_at = min(due_at, :now) WHERE id = :id AND state = 'pending' "
    "RETURNING line, queue, due_at"
)
DELETE = "DELETE FROM backbeat_tasks WHERE id = ? AND state IN ('succeeded', 'failed', 'cancelled')"


def run_now(conn: sqlite3.Connection, ids: list[str]) -> int:
    """`Store.run_now` in a write transaction; the caller wakes the waiting workers."""
    now = time.time()
    rows = [
        row
        for task_id in dict.fromkeys(ids)
        for row in conn.execute(RUN_NOW, {"now": now, "id": task_id})
    ]
    lines = [row for row in rows if row[0] is not None]
    if lines:  # a gated task's line is looked at from now
        conn.executemany(OPEN_LINE, lines)
    return len(rows)


def delete(conn: sqlite3.Connection, ids: list[str]) -> int:
    """`Store.delete` in a write transaction."""
    return conn.executemany(DELETE, [(task_id,) for task_id in dict.fromkeys(ids)]).rowcount
