"""The embedded store: one SQLite file (stdlib `sqlite3`), shared by processes on one host.

The file itself — connections, the writer thread and its group commit, the
checks that keep a deleted, corrupt or full file from swallowing tasks — is
`backbeat.stores.sqlite_file`. This module is the store contract in SQL:

* enqueues made in one turn of the event loop become one statement;
* a claim is one ``UPDATE … RETURNING`` that takes runnable tasks and sets
  their lease in the same statement, so two workers never hold one task;
  expired leases are counted (`lost`), and a task lost too often is
  dead-lettered in the same transaction;
* a sequence's order is a JSON list of ids (``after``) checked with ``json_each``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from backbeat.status import TaskState
from backbeat.stores.base import (
    FINISHED_STATES,
    ClaimedTask,
    NewTask,
    Settlement,
    StoredStatus,
    StoreError,
)
from backbeat.stores.sqlite_file import SQLiteFile

T = TypeVar("T")

logger = logging.getLogger("backbeat")

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
    key TEXT
);
CREATE INDEX IF NOT EXISTS backbeat_tasks_runnable ON backbeat_tasks (state, due_at);
CREATE INDEX IF NOT EXISTS backbeat_tasks_leases ON backbeat_tasks (state, lease_until);
CREATE INDEX IF NOT EXISTS backbeat_tasks_finished ON backbeat_tasks (state, finished_at);
"""

_STATUS_COLUMNS = (
    "id, name, state, attempts, error, traceback, created_at, started_at, finished_at, due_at, "
    "result, progress, queue, payload, worker, priority"
)


_INSERT = (
    "INSERT INTO backbeat_tasks (id, name, payload, retries, backoff, max_backoff, timeout, "
    "created_at, due_at, after, lease_until, queue, priority, key, state) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? IS NULL THEN 'pending' ELSE 'held' END)"
)
_KEY_COLUMN = 13  # where a row tuple holds its key
_LIVE_WITH_KEY = (
    "SELECT id FROM backbeat_tasks WHERE key = ? AND state IN ('held', 'pending', 'running') "
    "LIMIT 1"
)
# Runnable now: due, and every task it comes after finished (or purged). A
# dependency list that is not JSON would make json_each fail the whole claim
# (and every later one): CASE evaluates lazily, so such a row is claimed and
# then dead-lettered instead.
_RUNNABLE = (
    "due_at <= :now AND CASE WHEN after IS NULL OR NOT json_valid(after) THEN 1 ELSE NOT EXISTS ("
    " SELECT 1 FROM json_each(t.after) j JOIN backbeat_tasks p ON p.id = j.value"
    " WHERE p.state IN ('held', 'pending', 'running')) END"
)
_CLAIMED_COLUMNS = (
    "id, name, payload, attempts, created_at, retries, backoff, max_backoff, timeout, lost, error, "
    "queue"
)
# A running task whose lease expired was lost by its worker (it died or hung):
# taken over, and counted in `lost`. A first loss is taken over like any task; a
# task lost more often (a suspect) only by an idle worker, to run alone.
_CLAIM = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, "
    "started_at = :now, lease_until = :until, worker = :worker, "
    "lost = lost + (state = 'running') "
    "WHERE id IN (SELECT id FROM ({candidates}) ORDER BY priority DESC, due_at LIMIT :limit) "
    f"RETURNING {_CLAIMED_COLUMNS}, after IS NOT NULL AND NOT json_valid(after)"
)
_CORRUPT_AFTER = (
    "stored task is corrupt: its list of tasks to run after is not valid JSON "
    "(the row was changed outside backbeat); dead-lettered"
)


@functools.lru_cache(maxsize=64)
def _claim_sql(queues: int | None, alone: bool) -> str:
    """The claim for any queue (None) or for `queues` of them (parameters :q0, :q1, …)."""
    only = ""
    if queues is not None:
        only = " AND queue IN (" + ", ".join(f":q{n}" for n in range(queues)) + ")"
    if alone:
        return _CLAIM.format(
            candidates=(
                "SELECT id, priority, due_at FROM backbeat_tasks WHERE state = 'running' "
                f"AND lease_until < :now AND lost >= 1{only} ORDER BY lease_until LIMIT 1"
            )
        )
    return _CLAIM.format(
        candidates=(
            "SELECT id, priority, due_at FROM backbeat_tasks t "
            f"WHERE state = 'pending' AND {_RUNNABLE}{only}"
            " UNION ALL SELECT id, priority, due_at FROM backbeat_tasks t"
            f" WHERE state = 'held' AND lease_until < :now AND {_RUNNABLE}{only}"
            " UNION ALL SELECT id, priority, due_at FROM backbeat_tasks"
            f" WHERE state = 'running' AND lease_until < :now AND lost = 0{only}"
        )
    )


_DEAD_LOST = (
    "UPDATE backbeat_tasks SET state = 'failed', finished_at = :now, lease_until = NULL, "
    "lost = lost + 1, error = 'its worker died or hung each time it ran it: the lease was lost ' "
    "|| (lost + 1) || ' times (max_lost_leases=' || :max_lost || '); dead-lettered. Retry it "
    "(backbeat retry) once the cause is fixed.' "
    "WHERE state = 'running' AND lease_until < :now AND lost + 1 >= :max_lost "
    "RETURNING id, name, error"
)
_SOONEST = "SELECT min(due_at) FROM backbeat_tasks WHERE state = 'pending' AND due_at > ?"
# Cancelled while running, and its worker is gone: cancelled, not run again.
_CANCEL_ORPHANS = (
    "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = :now, lease_until = NULL "
    "WHERE state = 'running' AND lease_until < :now AND cancel_requested = 1"
)
_START = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, started_at = ?, "
    "lease_until = ?, worker = ? "
    "WHERE id = ? AND state = 'held' AND after IS NULL AND due_at <= ? "
    f"RETURNING {_CLAIMED_COLUMNS}"
)
_ACTIVATE = (
    "UPDATE backbeat_tasks SET state = 'pending', lease_until = NULL "
    "WHERE id = ? AND state = 'held'"
)


def _insert_groups(
    groups: list[list[tuple[Any, ...]]], conn: sqlite3.Connection
) -> list[list[str] | BaseException]:
    """Insert several callers' rows: all in one statement, or each group alone if that
    fails. Returns each group's ids (for a row whose key a live task has: that task's)."""
    known: dict[str, str] = {}  # key -> id, of live tasks and of keyed rows written now
    ids = [[_keyed_id(row, conn, known) for row in rows] for rows in groups]
    fresh = [
        [row for row, i in zip(rows, g, strict=True) if i == row[0]]
        for rows, g in zip(groups, ids, strict=True)
    ]
    conn.execute("SAVEPOINT groups")
    try:
        conn.executemany(_INSERT, [row for rows in fresh for row in rows])
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
            conn.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO one")
            outcomes.append(exc)
        else:
            outcomes.append(group_ids)
        conn.execute("RELEASE one")
    return outcomes


def _keyed_id(row: tuple[Any, ...], conn: sqlite3.Connection, known: dict[str, str]) -> str:
    key = row[_KEY_COLUMN]
    if key is None:
        return str(row[0])
    if key not in known:
        found = conn.execute(_LIVE_WITH_KEY, (key,)).fetchone()
        known[key] = found[0] if found else row[0]
    return known[key]


def _setup(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    conn.execute(
        "CREATE INDEX IF NOT EXISTS backbeat_tasks_keys ON backbeat_tasks (key) "
        "WHERE key IS NOT NULL"
    )


_ADDED_COLUMNS = {
    "lost": "INTEGER NOT NULL DEFAULT 0",
    "result": "TEXT",
    "cancel_requested": "INTEGER NOT NULL DEFAULT 0",
    "progress": "TEXT",
    "queue": "TEXT NOT NULL DEFAULT 'default'",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "key": "TEXT",
}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a store made by an older backbeat up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(backbeat_tasks)")}
    for name, declaration in _ADDED_COLUMNS.items():
        if name in columns:
            continue
        try:
            conn.execute(f"ALTER TABLE backbeat_tasks ADD COLUMN {name} {declaration}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process just added it
                raise


def _claimed(row: Any) -> ClaimedTask:
    """A claimed row; its receipt is id and attempt number (the fencing token)."""
    claimed = ClaimedTask(*row)
    claimed.receipt = f"{claimed.id}:{claimed.attempts}"
    return claimed


def _fence(receipt: str) -> tuple[str, int]:
    task_id, _, attempt = receipt.rpartition(":")
    return task_id, int(attempt)


# A claim is current while the task runs in that very attempt.
_CURRENT = "id = ? AND attempts = ? AND state = 'running'"
_CURRENT_NAMED = "id = :id AND attempts = :attempt AND state = 'running'"
_SETTLE = {
    TaskState.SUCCEEDED: (
        "UPDATE backbeat_tasks SET state = 'succeeded', finished_at = :now, lease_until = NULL, "
        "result = :result WHERE " + _CURRENT_NAMED
    ),
    TaskState.SCHEDULED: (
        "UPDATE backbeat_tasks SET state = 'pending', due_at = :retry_at, lease_until = NULL, "
        "worker = NULL, error = :error, traceback = :traceback WHERE " + _CURRENT_NAMED
    ),
    TaskState.FAILED: (
        "UPDATE backbeat_tasks SET state = 'failed', finished_at = :now, lease_until = NULL, "
        "error = :error, traceback = :traceback WHERE " + _CURRENT_NAMED
    ),
    TaskState.CANCELLED: (
        "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = :now, lease_until = NULL, "
        "error = coalesce(:error, error) WHERE " + _CURRENT_NAMED
    ),
}


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (as in SQLAlchemy)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(
            f"not a SQLite store URL: {url!r} (expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db)"
        )
    return Path(url[len(prefix) :])


class SQLiteStore:
    """Tasks in one SQLite file; ``create=False`` refuses a path where no store exists."""

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, create: bool = True
    ) -> None:
        self.path = Path(path)
        self.file = SQLiteFile(
            self.path,
            busy_timeout=busy_timeout,
            create=create,
            setup=_setup,
            count_unfinished=(
                "SELECT count(*) FROM backbeat_tasks WHERE state IN ('held', 'pending', 'running')"
            ),
        )
        # Rows waiting to be written, per event loop, with the futures of their callers.
        self._enqueues: dict[
            asyncio.AbstractEventLoop, list[tuple[list[tuple[Any, ...]], asyncio.Future[list[str]]]]
        ] = {}
        # When the claim that ran last saw the next due time, and what it was.
        self._due_hint: tuple[float, float | None] = (-1.0, None)
        # Open now: a bad path or a corrupt file is an error here, not at the first task.
        self.file.connection(check=True)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        return cls(path_from_url(url), create=create)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def transactions(self) -> int:
        """Commits made so far: tells how well writes were grouped."""
        return self.file.transactions

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.file.write(fn)

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        return self.file.read(sql, parameters)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.file.close)

    def close_sync(self) -> None:
        self.file.close()

    # --- writes ---------------------------------------------------------------------------

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        """Insert tasks. Enqueues made in one turn of the event loop become one write."""
        rows = [
            (
                t.id,
                t.name,
                t.payload,
                t.retries,
                t.backoff,
                t.max_backoff,
                t.timeout,
                t.created_at,
                t.due_at,
                t.after,
                t.held_until,
                t.queue,
                t.priority,
                t.key,
                t.held_until,
            )
            for t in tasks
        ]
        loop = asyncio.get_running_loop()
        batch = self._enqueues.get(loop)
        if batch is None:
            batch = self._enqueues[loop] = []
            loop.call_soon(self._flush_enqueues, loop)
        done: asyncio.Future[list[str]] = loop.create_future()
        batch.append((rows, done))
        return await done

    def _flush_enqueues(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._enqueues.pop(loop)
        try:
            future = self.file.submit(
                functools.partial(_insert_groups, [rows for rows, _ in batch])
            )
        except StoreError as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return

        def resolve(outcome: asyncio.Future[list[list[str] | BaseException]]) -> None:
            error = outcome.exception()
            for index, (_, done) in enumerate(batch):
                if done.done():
                    continue
                written = error or outcome.result()[index]
                if isinstance(written, BaseException):
                    done.set_exception(written)
                else:
                    done.set_result(written)

        asyncio.wrap_future(future, loop=loop).add_done_callback(resolve)

    async def activate(self, ids: list[str]) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(_ACTIVATE, [(task_id,) for task_id in ids])

        await self._write(update)

    async def start(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        def activate_and_claim(conn: sqlite3.Connection) -> list[ClaimedTask]:
            now = time.time()
            claimed: list[ClaimedTask] = []
            for task_id in ids:
                row = None
                if len(claimed) < limit:
                    # By primary key: a task that comes after none and is due now.
                    row = conn.execute(_START, (now, now + lease, worker, task_id, now)).fetchone()
                if row is not None:
                    claimed.append(_claimed(row))
                else:
                    conn.execute(_ACTIVATE, (task_id,))
            return claimed

        return await self._write(activate_and_claim)

    async def claim(
        self,
        worker: str,
        limit: int,
        lease: float,
        *,
        max_lost: int = 3,
        alone_first: bool = False,
        queues: tuple[str, ...] | None = None,
    ) -> list[ClaimedTask]:
        only = None if queues is None else len(queues)

        def take(conn: sqlite3.Connection) -> list[ClaimedTask]:
            now = time.time()
            conn.execute(_CANCEL_ORPHANS, {"now": now})
            for task_id, name, error in conn.execute(
                _DEAD_LOST, {"now": now, "max_lost": max_lost}
            ).fetchall():
                logger.error("Background task %r (id %s) failed: %s", name, task_id, error)
            parameters: dict[str, Any] = {
                "now": now,
                "until": now + lease,
                "worker": worker,
                "limit": limit,
            }
            parameters.update((f"q{n}", queue) for n, queue in enumerate(queues or ()))
            if alone_first:
                rows = conn.execute(_claim_sql(only, True), parameters).fetchall()
                if rows:
                    return [_claimed(row[:-1]) for row in rows]  # never corrupt: it ran
            claimed: list[list[Any]] = []
            corrupt: list[list[Any]] = []
            for *row, is_corrupt in conn.execute(_claim_sql(only, False), parameters).fetchall():
                (corrupt if is_corrupt else claimed).append(row)
            for row in corrupt:
                logger.error("backbeat: task %r (id %s): %s", row[1], row[0], _CORRUPT_AFTER)
                conn.execute(
                    "UPDATE backbeat_tasks SET state = 'failed', finished_at = ?, error = ?, "
                    "lease_until = NULL WHERE id = ?",
                    (now, _CORRUPT_AFTER, row[0]),
                )
            soonest = conn.execute(_SOONEST, (now,)).fetchone()
            self._due_hint = (time.monotonic(), soonest[0] if soonest else None)
            return [_claimed(row) for row in claimed]

        return await self._write(take)

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        def extend(conn: sqlite3.Connection) -> list[str]:
            until = time.time() + lease
            stop = []
            for receipt in receipts:
                task_id, attempt = _fence(receipt)
                row = conn.execute(
                    f"UPDATE backbeat_tasks SET lease_until = ? WHERE {_CURRENT} "
                    "RETURNING cancel_requested",
                    (until, task_id, attempt),
                ).fetchone()
                if row is None or row[0]:
                    stop.append(task_id)
            return stop

        return await self._write(extend)

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        def settle(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            kept = []
            for settlement in settlements:
                task_id, attempt = _fence(settlement.receipt)
                parameters = {
                    "now": now,
                    "id": task_id,
                    "attempt": attempt,
                    "result": settlement.result,
                    "error": settlement.error,
                    "traceback": settlement.traceback,
                    "retry_at": settlement.retry_at,
                }
                cursor = conn.execute(_SETTLE[settlement.state], parameters)
                kept.append(cursor.rowcount == 1)
            return kept

        return await self._write(settle)

    async def progress(self, receipt: str, document: str) -> bool:
        def keep(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    # Any state: the last report of an attempt may land after its outcome.
                    "UPDATE backbeat_tasks SET progress = ? WHERE id = ? AND attempts = ?",
                    (document, *_fence(receipt)),
                ).rowcount
                == 1
            )

        return await self._write(keep)

    async def release(self, receipts: list[str]) -> None:
        def give_back(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE backbeat_tasks SET state = 'pending', attempts = MAX(attempts - 1, 0), "
                f"lease_until = NULL, worker = NULL WHERE {_CURRENT} AND cancel_requested = 0",
                [_fence(receipt) for receipt in receipts],
            )

        await self._write(give_back)

    async def cancel(self, ids: list[str], reason: str) -> int:
        def stop(conn: sqlite3.Connection) -> int:
            now = time.time()
            count = 0
            for task_id in ids:
                count += conn.execute(
                    "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = ?, error = ?, "
                    "lease_until = NULL WHERE id = ? AND state IN ('held', 'pending')",
                    (now, reason, task_id),
                ).rowcount
                # A running task is cancelled by its worker, told at its next renewal.
                count += conn.execute(
                    "UPDATE backbeat_tasks SET cancel_requested = 1, error = ? "
                    "WHERE id = ? AND state = 'running'",
                    (reason, task_id),
                ).rowcount
            return count

        return await self._write(stop)

    async def retry(self, ids: list[str] | None) -> int:
        def again(conn: sqlite3.Connection) -> int:
            reset = (
                "UPDATE backbeat_tasks SET state = 'pending', attempts = 0, lost = 0, due_at = ?, "
                "finished_at = NULL, started_at = NULL, worker = NULL WHERE state = 'failed'"
            )
            now = time.time()
            if ids is None:
                return conn.execute(reset, (now,)).rowcount
            return sum(conn.execute(reset + " AND id = ?", (now, i)).rowcount for i in ids)

        return await self._write(again)

    async def purge(
        self,
        finished_before: float,
        states: tuple[str, ...] = FINISHED_STATES,
        *,
        dry_run: bool = False,
    ) -> int:
        unknown = set(states) - set(FINISHED_STATES)
        if unknown:
            raise ValueError(f"only finished tasks can be purged, not {sorted(unknown)}")
        marks = ", ".join("?" for _ in states)
        where = f"FROM backbeat_tasks WHERE state IN ({marks}) AND finished_at < ?"
        if dry_run:
            rows = await anyio.to_thread.run_sync(
                self._read, f"SELECT count(*) {where}", (*states, finished_before)
            )
            return int(rows[0][0])

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(f"DELETE {where}", (*states, finished_before)).rowcount

        return await self._write(delete)

    # --- reads ----------------------------------------------------------------------------

    def get_sync(self, task_id: str) -> StoredStatus | None:
        row = self._read(f"SELECT {_STATUS_COLUMNS} FROM backbeat_tasks WHERE id = ?", (task_id,))
        return StoredStatus(*row[0]) if row else None

    async def get(self, task_id: str) -> StoredStatus | None:
        return await anyio.to_thread.run_sync(self.get_sync, task_id)

    def counts_sync(self) -> dict[str, int]:
        rows = self._read(
            "SELECT CASE WHEN state IN ('pending', 'held') AND due_at > ? THEN 'scheduled' "
            "WHEN state = 'held' THEN 'pending' ELSE state END, "
            "count(*) FROM backbeat_tasks GROUP BY 1",
            (time.time(),),
        )
        counts = dict.fromkeys(
            ("pending", "scheduled", "running", "succeeded", "failed", "cancelled"), 0
        )
        counts.update({state: count for state, count in rows})
        return counts

    async def next_due(self) -> float | None:
        seen_at, due = self._due_hint
        if time.monotonic() - seen_at < 0.05:
            return due  # read by the claim that just ran, in its transaction

        def soonest() -> float | None:
            rows = self._read(
                _SOONEST,
                (time.time(),),
            )
            return rows[0][0] if rows else None

        return await anyio.to_thread.run_sync(soonest)

    async def counts(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self.counts_sync)

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        clauses: list[str] = []
        parameters: list[Any] = []
        if state is not None:
            now = time.time()
            if state == "scheduled":
                clauses.append("state IN ('held', 'pending') AND due_at > ?")
                parameters.append(now)
            elif state == "pending":
                clauses.append("state IN ('held', 'pending') AND due_at <= ?")
                parameters.append(now)
            else:
                clauses.append("state = ?")
                parameters.append(state)
        for column, value in (("queue", queue), ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if before is not None:
            clauses.append("id < ?")
            parameters.append(before)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        sql = f"SELECT {_STATUS_COLUMNS} FROM backbeat_tasks {where}ORDER BY id DESC LIMIT ?"
        rows = await anyio.to_thread.run_sync(self._read, sql, (*parameters, limit))
        return [StoredStatus(*row) for row in rows]
