"""The SQLite store's gates (`Store.claim`): rate limits and per-key concurrency, in SQL.

A gated task (its ``line`` set: one per queue and pair of gates, `NewTask.line`) is
left out of the ordinary claim and waits in its line. ``backbeat_lines`` lists the
lines that have live tasks, each with when to look at it next (``look_at``): at once
when it may have room, when its rate gate opens, a little later when its concurrency
gate is full (a task of it settling sets it back to now). A claim reads that small
table first, and does nothing more while it is empty: tasks without gates pay one
read of an empty table per claim, in the claim's transaction.

Rate gates keep their start times for one window (``backbeat_gate_starts``): open
while fewer than the limit started in the last window (exact: a burst of up to the
limit is allowed, never more in any window). Concurrency gates count their running
tasks (an index on the running ones); a gated task whose lease ran out is put back
in its line before that count, so a dead worker's slot is free at the next claim.
Everything happens in the claim's write transaction, on this host's clock.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

logger = logging.getLogger("backbeat")

GATES_SCHEMA = """
CREATE TABLE IF NOT EXISTS backbeat_lines (
    line TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    look_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS backbeat_lines_look ON backbeat_lines (look_at);
CREATE TABLE IF NOT EXISTS backbeat_gate_starts (gate TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS backbeat_gate_starts_at ON backbeat_gate_starts (gate, at);
CREATE INDEX IF NOT EXISTS backbeat_line_order ON backbeat_tasks
    (line, priority DESC, due_at) WHERE line IS NOT NULL AND state IN ('pending', 'held');
CREATE INDEX IF NOT EXISTS backbeat_gate_holders ON backbeat_tasks (concurrency_gate)
    WHERE state = 'running' AND concurrency_gate IS NOT NULL;
"""

# How long a line whose concurrency gate is full, or whose tasks wait for earlier ones,
# is left alone (a safety net: a settling task of the line sets it back to now at once).
RECHECK = 1.0

# The lines of queues not paused (`backbeat.stores.sqlite_queues`): a paused queue's lines
# are neither served nor waited for.
LINES = (
    "SELECT line, queue, look_at FROM backbeat_lines "
    "WHERE queue NOT IN (SELECT queue FROM backbeat_paused_queues) ORDER BY look_at"
)
SOONEST_LINE = (
    "SELECT min(look_at) FROM backbeat_lines "
    "WHERE queue NOT IN (SELECT queue FROM backbeat_paused_queues)"
)
# When a pending task falls due or a line is to be looked at next, after now (`Store.wait`).
SOONEST_OR_LINE = (
    "SELECT min(m) FROM (SELECT min(due_at) AS m FROM backbeat_tasks WHERE state = 'pending' "
    "AND due_at > :now UNION ALL SELECT min(look_at) FROM backbeat_lines WHERE look_at > :now)"
)
# A gated task whose lease ran out (its worker died or hung, or was taken over) waits in
# its line again, first by its order: counted as lost, as a task claimed again is.
BACK_IN_LINE = (
    "UPDATE backbeat_tasks SET state = 'pending', lost = lost + 1, lease_until = NULL, "
    "worker = NULL WHERE state = 'running' AND lease_until < :now AND line IS NOT NULL "
    "RETURNING line"
)
LOOK_NOW = "UPDATE backbeat_lines SET look_at = min(look_at, ?) WHERE line = ?"
OPEN_LINE = (
    "INSERT INTO backbeat_lines (line, queue, look_at) VALUES (?, ?, ?) "
    "ON CONFLICT (line) DO UPDATE SET look_at = min(look_at, excluded.look_at)"
)
# The first waiting tasks of a line that can start now (`RUNNABLE` in sqlite_sql).
HEADS = (
    "SELECT id, rate_gate, rate_limit, rate_window, concurrency_gate, max_concurrency "
    "FROM backbeat_tasks t WHERE line = :line AND state IN ('pending', 'held') "
    "AND (state = 'pending' OR held_until < :now) AND {runnable} "
    "ORDER BY priority DESC, due_at, rowid LIMIT :limit"
)
SOONEST_IN_LINE = (
    "SELECT min(due_at) FROM backbeat_tasks WHERE line = ? AND state IN ('pending', 'held') "
    "AND due_at > ?"
)
LIVE_IN_LINE = (
    "SELECT 1 FROM backbeat_tasks WHERE line = ? AND state IN ('held', 'pending', 'running') "
    "LIMIT 1"
)
STARTS = "SELECT count(*), min(at) FROM backbeat_gate_starts WHERE gate = ? AND at > ?"
FORGET_STARTS = "DELETE FROM backbeat_gate_starts WHERE gate = ? AND at <= ?"
FORGET_OLD_STARTS = "DELETE FROM backbeat_gate_starts WHERE at < ?"
HOLDERS = "SELECT count(*) FROM backbeat_tasks WHERE concurrency_gate = ? AND state = 'running'"
# Start the chosen tasks (`CLAIM` in sqlite_sql, for ids given as a JSON list).
TAKE = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, "
    "started_at = :now, lease_until = :until, held_until = NULL, worker = :worker "
    "WHERE id IN (SELECT value FROM json_each(:ids)) "
    "RETURNING {columns}, after IS NOT NULL AND NOT json_valid(after)"
)


def lines_of(rows: list[tuple[Any, ...]], line_column: int) -> list[tuple[str, str, float]]:
    """The lines (line, queue, due) of rows about to be inserted (`OPEN_LINE`'s parameters)."""
    return [(row[line_column], row[11], row[8]) for row in rows if row[line_column] is not None]


def take_gated(
    conn: sqlite3.Connection,
    parameters: dict[str, Any],
    queues: tuple[str, ...] | None,
    runnable: str,
    columns: str,
) -> tuple[list[list[Any]], float | None]:
    """Start the first tasks of the lines whose gates are open, up to ``:limit``; the rows
    (as `CLAIM` returns them) and when a line should be looked at next (None: no line)."""
    now: float = parameters["now"]
    lines = conn.execute(LINES).fetchall()
    if not lines:
        return [], None
    back = {line for (line,) in conn.execute(BACK_IN_LINE, {"now": now}).fetchall()}
    if back:
        settled(conn, back, now)
        lines = conn.execute(LINES).fetchall()
    taken: list[list[Any]] = []
    limit: int = parameters["limit"]
    heads_sql = HEADS.format(runnable=runnable)
    take_sql = TAKE.format(columns=columns)
    for line, queue, look_at in lines:
        if len(taken) >= limit or look_at > now:
            break  # ordered by look_at: the rest wait too
        if queues is not None and queue not in queues:
            continue
        heads = conn.execute(heads_sql, {"line": line, "now": now, "limit": limit - len(taken)})
        rows = heads.fetchall()
        if not rows:
            _nothing_to_start(conn, line, now)
            continue
        unreadable = _unreadable(rows[0])
        if unreadable is not None:  # changed outside backbeat: it alone is dead-lettered
            _bury(conn, rows[0][0], unreadable, now)
            continue
        room, look_next = _room(conn, rows[0], now, limit - len(taken))
        ids = [row[0] for row in rows[:room]]
        if ids:
            order = {task_id: n for n, task_id in enumerate(ids)}
            started = conn.execute(take_sql, {**parameters, "ids": _json(ids)}).fetchall()
            taken.extend(sorted((list(row) for row in started), key=lambda row: order[row[0]]))
            if rows[0][1] is not None:
                conn.executemany(
                    "INSERT INTO backbeat_gate_starts (gate, at) VALUES (?, ?)",
                    [(rows[0][1], now)] * len(ids),
                )
        # Served lines go to the back (the others come first next time), closed ones
        # wait for their gate.
        conn.execute("UPDATE backbeat_lines SET look_at = ? WHERE line = ?", (look_next, line))
    soonest = conn.execute(SOONEST_LINE).fetchone()[0]
    return taken, soonest


def _unreadable(head: tuple[Any, ...]) -> str | None:
    """The gate field of a line's first task that cannot be read, if one cannot."""
    _, rate_gate, rate_limit, rate_window, concurrency_gate, max_concurrency = head

    def number(value: object, least: float) -> bool:
        return isinstance(value, int | float) and value >= least

    if rate_gate is not None and not (number(rate_limit, 1) and number(rate_window, 1e-9)):
        return "rate_limit/rate_window"
    if concurrency_gate is not None and not number(max_concurrency, 1):
        return "max_concurrency"
    return None


def _bury(conn: sqlite3.Connection, task_id: str, field: str, now: float) -> None:
    error = (
        f"its stored record cannot be read: field {field} is missing or malformed (changed "
        "outside backbeat?); dead-lettered"
    )
    logger.error("backbeat: task %s: %s", task_id, error)
    conn.execute(
        "UPDATE backbeat_tasks SET state = 'failed', finished_at = ?, error = ?, "
        "held_until = NULL, lease_until = NULL WHERE id = ?",
        (now, error, task_id),
    )


def _room(
    conn: sqlite3.Connection, head: tuple[Any, ...], now: float, room: int
) -> tuple[int, float]:
    """How many of a line may start now (its head's gates), and when to look at it next."""
    _, rate_gate, rate_limit, rate_window, concurrency_gate, max_concurrency = head
    look_next = now
    if rate_gate is not None:
        conn.execute(FORGET_STARTS, (rate_gate, now - rate_window))
        count, oldest = conn.execute(STARTS, (rate_gate, now - rate_window)).fetchone()
        room = min(room, rate_limit - count)
        if count + max(room, 0) >= rate_limit:  # closed once these start: open again then
            look_next = max(look_next, (oldest if count else now) + rate_window)
    if concurrency_gate is not None:
        (held,) = conn.execute(HOLDERS, (concurrency_gate,)).fetchone()
        room = min(room, max_concurrency - held)
        if held + max(room, 0) >= max_concurrency:
            look_next = max(look_next, now + RECHECK)
    return max(room, 0), look_next


def _nothing_to_start(conn: sqlite3.Connection, line: str, now: float) -> None:
    """A line with nothing runnable now: gone if it has no live task, else looked at when
    its soonest task is due (or a little later: it waits for an earlier task)."""
    if conn.execute(LIVE_IN_LINE, (line,)).fetchone() is None:
        conn.execute("DELETE FROM backbeat_lines WHERE line = ?", (line,))
        return
    (due,) = conn.execute(SOONEST_IN_LINE, (line, now)).fetchone()
    look_at = now + RECHECK if due is None else min(due, now + RECHECK)
    conn.execute("UPDATE backbeat_lines SET look_at = ? WHERE line = ?", (look_at, line))


def settled(conn: sqlite3.Connection, lines: set[str], now: float) -> None:
    """Tasks of these lines settled, were released or given back: a slot may be free."""
    conn.executemany(LOOK_NOW, [(now, line) for line in lines])


def _json(ids: list[str]) -> str:
    return "[" + ",".join(f'"{task_id}"' for task_id in ids) + "]"
