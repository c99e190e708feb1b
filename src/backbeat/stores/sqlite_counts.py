"""The SQLite store's task counts (`counts`, `queues`): the finished ones kept by triggers.

Counting a million finished tasks on their index took 80-130 ms, over one queue 240-370 ms
(a row look-up each), and listing the queues (`DISTINCT queue` over the table) 440 ms: too
slow for a dashboard that reads them every second. So `backbeat_finished_counts` holds one
row per queue and finished state, changed by triggers in the very statement that finishes,
retries, purges or deletes a task — every path counts, whichever code wrote it.

Only finished tasks are counted so: enqueue and claim, the hot path, pay nothing (a task is
never written finished, nor moved to another queue, so no insert trigger is needed; counting
every state cost enqueue and claim 15-20% in bench/sqlite), and a task pays one small upsert
when it finishes (trigger bodies measured: a plain `VALUES` upsert adds ~10% to `finish`,
an `INSERT ... SELECT ... WHERE` one six times that). The waiting and running tasks are
counted at read time on their partial indexes, as before: they are the live work, not the
history, and a waiting task's due time decides whether it shows as pending or scheduled,
which no counter can know ahead.

A store made before the table existed gets it on first open: table, triggers and the
initial count in one transaction, so that no task is counted twice or missed.
"""

from __future__ import annotations

import sqlite3

from backbeat.status import FINISHED

_FINISHED = "(" + ", ".join(f"'{state}'" for state in FINISHED) + ")"
_REMOVE = (
    "UPDATE backbeat_finished_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS backbeat_finished_counts (queue TEXT NOT NULL, "
    "state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (queue, state)) WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS backbeat_counts_finished AFTER UPDATE OF state "
    f"ON backbeat_tasks WHEN new.state IN {_FINISHED} AND old.state IS NOT new.state BEGIN "
    "INSERT INTO backbeat_finished_counts (queue, state, n) VALUES (new.queue, new.state, 1) "
    "ON CONFLICT (queue, state) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER IF NOT EXISTS backbeat_counts_reopened AFTER UPDATE OF state "
    f"ON backbeat_tasks WHEN old.state IN {_FINISHED} AND old.state IS NOT new.state BEGIN "
    f"{_REMOVE} END",
    "CREATE TRIGGER IF NOT EXISTS backbeat_counts_deleted AFTER DELETE ON backbeat_tasks "
    f"WHEN old.state IN {_FINISHED} BEGIN {_REMOVE} END",
)
# Made last: while it is missing, the table may be incomplete.
_MARK = "backbeat_counts_deleted"
_FILL = (
    "INSERT INTO backbeat_finished_counts (queue, state, n) "
    f"SELECT queue, state, count(*) FROM backbeat_tasks WHERE state IN {_FINISHED} "
    "GROUP BY queue, state"
)


def setup_counts(conn: sqlite3.Connection) -> None:
    """Make the counts table and its triggers, counting the tasks already stored (once)."""
    if _made(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _made(conn):  # another process may have made it while this one waited
            for statement in _SCHEMA:
                conn.execute(statement)
            recount(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def recount(conn: sqlite3.Connection) -> None:
    """Count the finished tasks afresh, in the caller's transaction: for rows written
    other than through the store (a fixture, an import), which no trigger counted."""
    conn.execute("DELETE FROM backbeat_finished_counts")
    conn.execute(_FILL)


def _made(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?", (_MARK,)
    ).fetchone()
    return found is not None


# (stored state, a due time, count): the live tasks, one part per partial index so that no
# part reads the whole table; then the finished, counted. The waiting ones come in two
# groups, due and not yet, each with a due time of its own side of :now, from which
# `shown_state` tells pending from scheduled; the others' due time does not matter (0).
_WAITING = (
    "SELECT '{state}', min(due_at), count(*) FROM backbeat_tasks WHERE state = '{state}' "
    "AND (:queue IS NULL OR queue = :queue) GROUP BY due_at > :now"
)
COUNTS = " UNION ALL ".join(
    [
        _WAITING.format(state="pending"),
        _WAITING.format(state="held"),
        "SELECT 'running', 0, count(*) FROM backbeat_tasks WHERE state = 'running' "
        "AND (:queue IS NULL OR queue = :queue)",
        "SELECT state, 0, sum(n) FROM backbeat_finished_counts "
        "WHERE (:queue IS NULL OR queue = :queue) GROUP BY state",
    ]
)
QUEUES = (
    "SELECT queue FROM backbeat_finished_counts WHERE n > 0 "
    "UNION SELECT queue FROM backbeat_tasks WHERE state = 'pending' "
    "UNION SELECT queue FROM backbeat_tasks WHERE state = 'held' "
    "UNION SELECT queue FROM backbeat_tasks WHERE state = 'running' "
    "ORDER BY queue"
)
