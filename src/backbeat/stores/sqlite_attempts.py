"""The SQLite store's attempt history (`Store.attempts`): the attempts that did not succeed.

Written by triggers, in the very statement that ends the attempt, so every path that does
(`finish` of a retry, a dead letter or a cancel; the claim that takes a lost task over,
dead-letters it or puts it back in its line; a cancelled task whose worker is gone) records
it, with the attempt's worker and start as they were before that statement changed them.
The success path writes nothing: the triggers' conditions are false there (a comparison of
two columns of the row being updated). A task's rows go with it (`purge`, `delete`), and
only the latest `ATTEMPTS_KEPT` are kept per task.
"""

from __future__ import annotations

import sqlite3

from backbeat.stores.inspection import ATTEMPTS_KEPT, AttemptRecord

_KEEP_LATEST = (
    "DELETE FROM backbeat_attempts WHERE task_id = old.id AND seq <= (SELECT seq FROM "
    f"backbeat_attempts WHERE task_id = old.id ORDER BY seq DESC LIMIT 1 OFFSET {ATTEMPTS_KEPT});"
)
_INSERT = (
    "INSERT INTO backbeat_attempts (task_id, number, worker, started_at, finished_at, outcome, "
    "error, traceback) VALUES "
)
# The host's clock in seconds since the epoch, in SQL (a retry has no finished_at of its own).
# Through julianday it is only good to ~40 µs, so a retry's end is kept no earlier than its
# start (Python's clock): an attempt never ends before it began.
_NOW = "(julianday('now') - 2440587.5) * 86400.0"

ATTEMPTS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS backbeat_attempts (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    worker TEXT,
    started_at REAL,
    finished_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS backbeat_attempts_task ON backbeat_attempts (task_id, seq);
-- Settled by its worker (retried, failed, cancelled) or cancelled once its worker was gone;
-- not given back (`release` counts the attempt off) and not lost (below).
CREATE TRIGGER IF NOT EXISTS backbeat_attempt_ended AFTER UPDATE OF state ON backbeat_tasks
WHEN old.state = 'running' AND new.state IN ('pending', 'failed', 'cancelled')
    AND new.attempts = old.attempts AND new.lost = old.lost
BEGIN
    {_INSERT}(old.id, old.attempts, old.worker, old.started_at,
        max(coalesce(new.finished_at, {_NOW}), coalesce(old.started_at, 0)),
        CASE new.state WHEN 'pending' THEN 'retried' ELSE new.state END,
        new.error, CASE WHEN new.state = 'cancelled' THEN NULL ELSE new.traceback END);
    {_KEEP_LATEST}
END;
-- Lost: its lease ran out (its worker died or hung, or was taken over), and a claim took it
-- over, dead-lettered it (the error says so) or put it back in its line.
CREATE TRIGGER IF NOT EXISTS backbeat_attempt_lost AFTER UPDATE OF lost ON backbeat_tasks
WHEN new.lost > old.lost
BEGIN
    {_INSERT}(old.id, old.attempts, old.worker, old.started_at,
        coalesce(old.lease_until, {_NOW}), 'lost',
        CASE WHEN new.state = 'failed' THEN new.error END, NULL);
    {_KEEP_LATEST}
END;
CREATE TRIGGER IF NOT EXISTS backbeat_attempts_gone AFTER DELETE ON backbeat_tasks
BEGIN
    DELETE FROM backbeat_attempts WHERE task_id = old.id;
END;
"""

_SELECT = (
    "SELECT number, worker, started_at, finished_at, outcome, error, traceback "
    "FROM backbeat_attempts WHERE task_id = ? ORDER BY seq"
)


def attempts(conn: sqlite3.Connection, task_id: str) -> list[AttemptRecord]:
    """`Store.attempts`: a task's attempts, oldest first."""
    return [AttemptRecord(*row) for row in conn.execute(_SELECT, (task_id,)).fetchall()]
