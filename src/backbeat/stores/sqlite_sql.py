"""The SQL of the SQLite store: its schema, and one statement per step of the contract.

Kept apart from `backbeat.stores.sqlite` so that the store's Python reads as the
contract it implements; a PostgreSQL store will have its own file like this one.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from backbeat.status import TaskState
from backbeat.stores.base import DuplicateTask, NewTask, after_json
from backbeat.stores.sqlite_attempts import ATTEMPTS_SCHEMA
from backbeat.stores.sqlite_counts import setup_counts
from backbeat.stores.sqlite_gates import GATES_SCHEMA, OPEN_LINE, lines_of
from backbeat.stores.sqlite_queues import NOT_PAUSED, QUEUES_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS backbeat_tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    backoff REAL NOT NULL DEFAULT 1.0,
    max_backoff REAL NOT NULL DEFAULT 60.0,
    timeout REAL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease_until REAL,
    worker TEXT,
    error TEXT,
    traceback TEXT,
    after TEXT,
    lost INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    queue TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 0,
    key TEXT,
    rate_gate TEXT,
    rate_limit INTEGER NOT NULL DEFAULT 0,
    rate_window REAL NOT NULL DEFAULT 0,
    concurrency_gate TEXT,
    max_concurrency INTEGER NOT NULL DEFAULT 0,
    line TEXT,
    held_until REAL
);
CREATE TABLE IF NOT EXISTS backbeat_schedules (
    name TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    last_tick INTEGER,
    last_task TEXT,
    note TEXT,
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS backbeat_workers (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

STATUS_COLUMNS = (
    "id, name, state, attempts, error, traceback, created_at, started_at, finished_at, due_at, "
    "result, progress, queue, payload, worker, priority"
)


INSERT = (
    "INSERT INTO backbeat_tasks (id, name, payload, retries, backoff, max_backoff, timeout, "
    "created_at, due_at, after, held_until, queue, priority, key, state, rate_gate, "
    "rate_limit, rate_window, concurrency_gate, max_concurrency, line) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "CASE WHEN ? IS NULL THEN 'pending' ELSE 'held' END, ?, ?, ?, ?, ?, ?)"
)
KEY_COLUMN = 13  # where a row tuple holds its key
LINE_COLUMN = 20  # and its gates' line (`backbeat.stores.sqlite_gates`)


def insert_row(t: NewTask) -> tuple[Any, ...]:
    """The parameters of `INSERT` for a task (its key at `KEY_COLUMN`)."""
    return (
        t.id,
        t.name,
        t.payload,
        t.retries,
        t.backoff,
        t.max_backoff,
        t.timeout,
        t.created_at,
        t.due_at,
        after_json(t.after),
        t.held_until,
        t.queue,
        t.priority,
        t.key,
        t.held_until,
        t.rate_gate,
        t.rate_limit,
        t.rate_window,
        t.concurrency_gate,
        t.max_concurrency,
        t.line,
    )


EXISTS = "SELECT 1 FROM backbeat_tasks WHERE id = ?"
LIVE_WITH_KEY = (
    "SELECT id FROM backbeat_tasks WHERE key = ? AND state IN ('held', 'pending', 'running') "
    "LIMIT 1"
)
# Runnable now: due, and every task it comes after finished (or purged). A
# dependency list that is not JSON would make json_each fail the whole claim
# (and every later one): CASE evaluates lazily, so such a row is claimed and
# then dead-lettered instead.
RUNNABLE = (
    "due_at <= :now AND CASE WHEN after IS NULL OR NOT json_valid(after) THEN 1 ELSE NOT EXISTS ("
    " SELECT 1 FROM json_each(t.after) j JOIN backbeat_tasks p ON p.id = j.value"
    " WHERE p.state IN ('held', 'pending', 'running')) END"
)
CLAIMED_COLUMNS = (
    "id, name, payload, attempts, created_at, retries, backoff, max_backoff, timeout, lost, error, "
    "queue"
)
# A running task whose lease expired was lost by its worker (it died or hung):
# taken over, and counted in `lost`. A first loss is taken over like any task; a
# task lost more often (a suspect) only by an idle worker, to run alone.
CLAIM = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, "
    "started_at = :now, lease_until = :until, held_until = NULL, worker = :worker, "
    "lost = lost + (state = 'running') "
    "WHERE id IN (SELECT id FROM ({candidates}) ORDER BY priority DESC, due_at LIMIT :limit) "
    f"RETURNING {CLAIMED_COLUMNS}, after IS NOT NULL AND NOT json_valid(after)"
)
CORRUPT_AFTER = (
    "stored task is corrupt: its list of tasks to run after is not valid JSON "
    "(the row was changed outside backbeat); dead-lettered"
)


@functools.lru_cache(maxsize=64)
def claim_sql(queues: int | None, alone: bool) -> str:
    """The claim for any queue (None) or for `queues` of them (parameters :q0, :q1, …)."""
    only = NOT_PAUSED
    if queues is not None:
        only += " AND queue IN (" + ", ".join(f":q{n}" for n in range(queues)) + ")"
    if alone:
        return CLAIM.format(
            candidates=(
                "SELECT id, priority, due_at FROM backbeat_tasks WHERE state = 'running' "
                f"AND lease_until < :now AND lost >= 1 AND line IS NULL{only} "
                "ORDER BY lease_until LIMIT 1"
            )
        )
    return CLAIM.format(
        candidates=(
            "SELECT id, priority, due_at FROM backbeat_tasks t "
            f"WHERE state = 'pending' AND line IS NULL AND {RUNNABLE}{only}"
            " UNION ALL SELECT id, priority, due_at FROM backbeat_tasks t"
            f" WHERE state = 'held' AND held_until < :now AND line IS NULL AND {RUNNABLE}{only}"
            " UNION ALL SELECT id, priority, due_at FROM backbeat_tasks"
            f" WHERE state = 'running' AND lease_until < :now AND lost = 0 AND line IS NULL{only}"
        )
    )


DEAD_LOST = (
    "UPDATE backbeat_tasks SET state = 'failed', finished_at = :now, lease_until = NULL, "
    "lost = lost + 1, error = :error "
    "WHERE state = 'running' AND lease_until < :now AND lost + 1 >= :max_lost "
    "RETURNING id, name, error"
)
BEAT = (
    "INSERT INTO backbeat_workers (name, document, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET document = excluded.document, "
    "expires_at = excluded.expires_at"
)
WORKERS = "SELECT document, expires_at FROM backbeat_workers WHERE expires_at > ? ORDER BY name"
# A dead worker's tasks: their leases run out now (the next claim counts them as lost).
TAKE_OVER = (
    "UPDATE backbeat_tasks SET lease_until = :now "
    "WHERE state = 'running' AND worker = :worker AND lease_until > :now RETURNING id"
)
SOONEST = "SELECT min(due_at) FROM backbeat_tasks WHERE state = 'pending' AND due_at > ?"
# Cancelled while running, and its worker is gone: cancelled, not run again.
CANCEL_ORPHANS = (
    "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = :now, lease_until = NULL "
    "WHERE state = 'running' AND lease_until < :now AND cancel_requested = 1"
)
# Tasks written ahead, by their ids (a JSON list): those that can run now are claimed
# (up to :limit) in one statement, then the others are made runnable in another.
START = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, "
    "started_at = :now, lease_until = :until, held_until = NULL, worker = :worker "
    "WHERE id IN (SELECT t.id FROM json_each(:ids) j JOIN backbeat_tasks t ON t.id = j.value "
    "WHERE t.state = 'held' AND t.after IS NULL AND t.due_at <= :now AND t.line IS NULL "
    "AND t.queue NOT IN (SELECT queue FROM backbeat_paused_queues) LIMIT :limit) "
    f"RETURNING {CLAIMED_COLUMNS}"
)
ACTIVATE = (
    "UPDATE backbeat_tasks SET state = 'pending', held_until = NULL "
    "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'held' RETURNING line"
)


# Partial indexes: a row is in one only while it is in that state, so a task moving
# held -> running -> succeeded touches two small indexes, not three whole ones (a
# third less writer time per task). Each query names the state its index covers.
# The failed and the cancelled tasks by id are the dashboard's (`sqlite_search`): newest
# first, whatever the number of succeeded ones (the failed with what their groups need,
# read from the index alone); the hot path never enters them.
INDEXES = """
DROP INDEX IF EXISTS backbeat_tasks_runnable;
DROP INDEX IF EXISTS backbeat_tasks_leases;
DROP INDEX IF EXISTS backbeat_tasks_finished;
DROP INDEX IF EXISTS backbeat_held;
CREATE INDEX IF NOT EXISTS backbeat_pending ON backbeat_tasks (due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS backbeat_held_until ON backbeat_tasks (held_until)
    WHERE state = 'held';
CREATE INDEX IF NOT EXISTS backbeat_running ON backbeat_tasks (lease_until)
    WHERE state = 'running';
CREATE INDEX IF NOT EXISTS backbeat_finished ON backbeat_tasks (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS backbeat_failed ON backbeat_tasks (id, name, finished_at, error)
    WHERE state = 'failed';
CREATE INDEX IF NOT EXISTS backbeat_cancelled_ids ON backbeat_tasks (id)
    WHERE state = 'cancelled';
"""


def setup(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    add_missing_columns(conn)
    conn.executescript(INDEXES)
    conn.execute(MOVE_HOLDS)
    conn.execute(
        "CREATE INDEX IF NOT EXISTS backbeat_tasks_keys ON backbeat_tasks (key) "
        "WHERE key IS NOT NULL"
    )
    conn.executescript(GATES_SCHEMA)
    conn.executescript(QUEUES_SCHEMA)
    conn.executescript(ATTEMPTS_SCHEMA)
    setup_counts(conn)


ADDED_COLUMNS = {
    "lost": "INTEGER NOT NULL DEFAULT 0",
    "result": "TEXT",
    "cancel_requested": "INTEGER NOT NULL DEFAULT 0",
    "progress": "TEXT",
    "queue": "TEXT NOT NULL DEFAULT 'default'",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "key": "TEXT",
    "rate_gate": "TEXT",
    "rate_limit": "INTEGER NOT NULL DEFAULT 0",
    "rate_window": "REAL NOT NULL DEFAULT 0",
    "concurrency_gate": "TEXT",
    "max_concurrency": "INTEGER NOT NULL DEFAULT 0",
    "line": "TEXT",
    # The hold of a task written ahead; before it, a held task's hold was its `lease_until`.
    "held_until": "REAL",
}


# A held task written by a backbeat before `held_until` kept its hold in `lease_until`.
# Each open moves such holds (a process of that version may still write them).
MOVE_HOLDS = (
    "UPDATE backbeat_tasks SET held_until = lease_until, lease_until = NULL "
    "WHERE state = 'held' AND lease_until IS NOT NULL"
)


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a store made by an older backbeat up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(backbeat_tasks)")}
    for name, declaration in ADDED_COLUMNS.items():
        if name in columns:
            continue
        try:
            conn.execute(f"ALTER TABLE backbeat_tasks ADD COLUMN {name} {declaration}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process just added it
                raise


# A claim is current while the task runs in that very attempt.
CURRENT = "id = ? AND attempts = ? AND state = 'running'"
CURRENT_NAMED = "id = :id AND attempts = :attempt AND state = 'running'"
RELEASE = (
    "UPDATE backbeat_tasks SET state = 'pending', attempts = MAX(attempts - 1, 0), "
    f"lease_until = NULL, worker = NULL WHERE {CURRENT} AND cancel_requested = 0 RETURNING line"
)
# Any state: the last report of an attempt may land after its outcome.
PROGRESS = "UPDATE backbeat_tasks SET progress = ? WHERE id = ? AND attempts = ?"
CANCEL_WAITING = (
    "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = ?, error = ?, "
    "held_until = NULL WHERE id = ? AND state IN ('held', 'pending')"
)
# A running task is cancelled by its worker, told at its next renewal.
CANCEL_RUNNING = (
    "UPDATE backbeat_tasks SET cancel_requested = 1, error = ? WHERE id = ? AND state = 'running'"
)
REQUEUE = (
    "UPDATE backbeat_tasks SET state = 'pending', attempts = 0, lost = 0, due_at = ?, "
    "finished_at = NULL, started_at = NULL, worker = NULL WHERE state = 'failed'"
)
REQUEUED = " RETURNING line, queue, due_at"
SETTLE = {
    TaskState.SUCCEEDED: (
        "UPDATE backbeat_tasks SET state = 'succeeded', finished_at = :now, lease_until = NULL, "
        "result = :result WHERE " + CURRENT_NAMED + " RETURNING line"
    ),
    TaskState.SCHEDULED: (
        "UPDATE backbeat_tasks SET state = 'pending', due_at = :retry_at, lease_until = NULL, "
        "worker = NULL, error = :error, traceback = :traceback WHERE "
        + CURRENT_NAMED
        + " RETURNING line"
    ),
    TaskState.FAILED: (
        "UPDATE backbeat_tasks SET state = 'failed', finished_at = :now, lease_until = NULL, "
        "error = :error, traceback = :traceback WHERE " + CURRENT_NAMED + " RETURNING line"
    ),
    TaskState.CANCELLED: (
        "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = :now, lease_until = NULL, "
        "error = coalesce(:error, error) WHERE " + CURRENT_NAMED + " RETURNING line"
    ),
}


def insert_groups(
    groups: list[list[tuple[Any, ...]]], conn: sqlite3.Connection
) -> list[list[str] | BaseException]:
    """Insert several callers' rows: all in one statement, or each group alone if that
    fails. Returns each group's ids (for a row whose key a live task has: that task's)."""
    known: dict[str, str] = {}  # key -> id, of live tasks and of keyed rows written now
    ids = [[keyed_id(row, conn, known) for row in rows] for rows in groups]
    fresh = [
        [row for row, i in zip(rows, g, strict=True) if i == row[0]]
        for rows, g in zip(groups, ids, strict=True)
    ]
    conn.execute("SAVEPOINT groups")
    try:
        inserted = [row for rows in fresh for row in rows]
        conn.executemany(INSERT, inserted)
        _open_lines(conn, inserted)
    except sqlite3.Error:
        conn.execute("ROLLBACK TO groups")
    else:
        conn.execute("RELEASE groups")
        return list(ids)
    conn.execute("RELEASE groups")
    outcomes: list[list[str] | BaseException] = []
    for rows, group_ids in zip(fresh, ids, strict=True):
        conn.execute("SAVEPOINT one")
        try:
            conn.executemany(INSERT, rows)
            _open_lines(conn, rows)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO one")
            outcomes.append(_duplicate(conn, rows) or exc)
        else:
            outcomes.append(group_ids)
        conn.execute("RELEASE one")
    return outcomes


def _duplicate(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> DuplicateTask | None:
    """Why a write failed if an id of it is stored already or repeated in it (looked up
    only once it failed: the primary key is the check on the way in)."""
    seen: set[str] = set()
    for row in rows:
        task_id = row[0]
        if task_id in seen or conn.execute(EXISTS, (task_id,)).fetchone():
            return DuplicateTask(task_id)
        seen.add(task_id)
    return None


def _open_lines(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Gated tasks were written: their lines are looked at from their due time."""
    lines = lines_of(rows, LINE_COLUMN)
    if lines:
        conn.executemany(OPEN_LINE, lines)


def keyed_id(row: tuple[Any, ...], conn: sqlite3.Connection, known: dict[str, str]) -> str:
    key = row[KEY_COLUMN]
    if key is None:
        return str(row[0])
    if key not in known:
        found = conn.execute(LIVE_WITH_KEY, (key,)).fetchone()
        known[key] = found[0] if found else row[0]
    return known[key]


def shown_as(state: str) -> str:
    """The rows a reader is shown in `state` (`backbeat.stores.base.shown_state` the other
    way round, for a filter): a condition on the parameters :state and :now."""
    if state == TaskState.SCHEDULED:
        return "state IN ('held', 'pending') AND due_at > :now"
    if state == TaskState.PENDING:
        return "state IN ('held', 'pending') AND due_at <= :now"
    return "state = :state"


def list_query(state: str | None, queue: str | None, name: str | None, before: str | None) -> str:
    """The SELECT of `list_tasks`, newest first: parameters named as its arguments, :now
    and :limit."""
    clauses = [] if state is None else [shown_as(state)]
    given = (("queue", queue), ("name", name))
    clauses += [f"{column} = :{column}" for column, value in given if value is not None]
    if before is not None:
        clauses.append("id < :before")
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    return f"SELECT {STATUS_COLUMNS} FROM backbeat_tasks {where}ORDER BY id DESC LIMIT :limit"
