"""The embedded store: one SQLite file (stdlib `sqlite3`), shared by processes on one host.

* WAL journal, ``synchronous=NORMAL`` and a busy timeout, so readers never wait
  for the writer and several processes can share the file.
* Every write goes through one writer thread per store, off the event loop.
  It takes whatever operations are queued, runs them in one ``BEGIN IMMEDIATE``
  transaction (each in a savepoint, so one bad operation fails alone) and
  commits once: many concurrent requests share one fsync (group commit).
* A claim is one ``UPDATE … RETURNING`` that takes runnable tasks and sets
  their lease in the same statement, so two workers never hold one task.
* Reads use a connection per thread and see what any process committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from backbeat.stores.base import (
    FINISHED_STATES,
    ClaimedTask,
    NewTask,
    StoredStatus,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)

T = TypeVar("T")

logger = logging.getLogger("backbeat")

# Check the whole file at start-up only up to this size: quick_check reads every page.
_QUICK_CHECK_LIMIT = 1 << 30
# Checkpoint the WAL every ~400 KB of changes, and truncate it back to 1 MiB after a
# checkpoint: on a small volume the WAL must not grow into the space the data needs.
_WAL_AUTOCHECKPOINT_PAGES = 100
_JOURNAL_SIZE_LIMIT = 1 << 20

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
    lost INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS backbeat_tasks_runnable ON backbeat_tasks (state, due_at);
CREATE INDEX IF NOT EXISTS backbeat_tasks_leases ON backbeat_tasks (state, lease_until);
CREATE INDEX IF NOT EXISTS backbeat_tasks_finished ON backbeat_tasks (state, finished_at);
"""

_STATUS_COLUMNS = (
    "id, name, state, attempts, error, traceback, created_at, started_at, finished_at, due_at"
)


_INSERT = (
    "INSERT INTO backbeat_tasks (id, name, payload, retries, backoff, max_backoff, timeout, "
    "created_at, due_at, after, lease_until, state) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? IS NULL THEN 'pending' ELSE 'held' END)"
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
    "id, name, payload, attempts, created_at, retries, backoff, max_backoff, timeout, lost, error"
)
# A running task whose lease expired was lost by its worker (it died or hung):
# taken over, and counted in `lost`. A first loss is taken over like any task; a
# task lost more often (a suspect) only by an idle worker, to run alone.
_CLAIM = (
    "UPDATE backbeat_tasks SET state = 'running', attempts = attempts + 1, "
    "started_at = :now, lease_until = :until, worker = :worker, "
    "lost = lost + (state = 'running') "
    "WHERE id IN (SELECT id FROM ({candidates}) ORDER BY due_at LIMIT :limit) "
    f"RETURNING {_CLAIMED_COLUMNS}, after IS NOT NULL AND NOT json_valid(after)"
)
_CORRUPT_AFTER = (
    "stored task is corrupt: its list of tasks to run after is not valid JSON "
    "(the row was changed outside backbeat); dead-lettered"
)
_CLAIM_ANY = _CLAIM.format(
    candidates=(
        f"SELECT id, due_at FROM backbeat_tasks t WHERE state = 'pending' AND {_RUNNABLE}"
        " UNION ALL SELECT id, due_at FROM backbeat_tasks t"
        f" WHERE state = 'held' AND lease_until < :now AND {_RUNNABLE}"
        " UNION ALL SELECT id, due_at FROM backbeat_tasks"
        " WHERE state = 'running' AND lease_until < :now AND lost = 0"
    )
)
_CLAIM_SUSPECT = _CLAIM.format(
    candidates=(
        "SELECT id, due_at FROM backbeat_tasks WHERE state = 'running' AND lease_until < :now"
        " AND lost >= 1 ORDER BY lease_until LIMIT 1"
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
) -> list[BaseException | None]:
    """Insert several callers' rows: all in one statement, or each alone if that fails."""
    conn.execute("SAVEPOINT groups")
    try:
        conn.executemany(_INSERT, [row for rows in groups for row in rows])
    except sqlite3.Error:
        conn.execute("ROLLBACK TO groups")
    else:
        conn.execute("RELEASE groups")
        return [None] * len(groups)
    conn.execute("RELEASE groups")
    outcomes: list[BaseException | None] = []
    for rows in groups:
        conn.execute("SAVEPOINT one")
        try:
            conn.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO one")
            outcomes.append(exc)
        else:
            outcomes.append(None)
        conn.execute("RELEASE one")
    return outcomes


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a store made by an older backbeat up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(backbeat_tasks)")}
    if "lost" not in columns:
        try:
            conn.execute("ALTER TABLE backbeat_tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process just added it
                raise


def _file_identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (as in SQLAlchemy)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(
            f"not a SQLite store URL: {url!r} (expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db)"
        )
    return Path(url[len(prefix) :])


class _WriteFailed(Exception):
    """A write raised inside an optimistic (savepoint-free) batch."""


class _Write:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class SQLiteStore:
    """Tasks in one SQLite file; ``create=False`` refuses a path where no store exists."""

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, create: bool = True
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.create = create
        self.transactions = 0  # commits made: tells how well writes were grouped
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        # Which file the path named when it was opened, and how many times it was
        # opened again since (read connections of an older generation are stale).
        self._identity: tuple[int, int] | None = None
        self._generation = 0
        # Rows waiting to be written, per event loop, with the futures of their callers.
        self._enqueues: dict[
            asyncio.AbstractEventLoop, list[tuple[list[tuple[Any, ...]], asyncio.Future[None]]]
        ] = {}
        # Open now: a bad path or a corrupt file is an error here, not at the first task.
        self._connection(check=True)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        return cls(path_from_url(url), create=create)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # --- connections -----------------------------------------------------------------

    def _create_private(self) -> None:
        """Make the file (and missing directories) readable by this user only.

        Task arguments are in it. SQLite gives the -wal and -shm files the
        mode of the database file, so they are private too.
        """
        missing = []
        parent = self.path.absolute().parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def _connect(self, *, check: bool = False) -> sqlite3.Connection:
        if not self.path.exists():
            if not self.create:
                raise StoreMissing(f"no store at {self.path.absolute()}")
            try:
                self._create_private()
            except OSError as exc:
                raise StoreError(
                    f"cannot create the SQLite store {str(self.path)!r}: {exc}"
                ) from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            if check and self.path.stat().st_size <= _QUICK_CHECK_LIMIT:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    conn.close()
                    raise StoreError(
                        f"the SQLite store {str(self.path)!r} is corrupt ({'; '.join(problems)}): "
                        "restore it from a backup, or move it away to start with an empty store"
                    )
            conn.executescript(SCHEMA)
            _add_missing_columns(conn)
            if self._identity is None:
                self._identity = _file_identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}") from exc
        return conn

    def _connection(self, *, check: bool = False) -> sqlite3.Connection:
        """This thread's read connection (a new one once the file was opened anew)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            conn.close()
            conn = None
        if conn is None:
            self._local.generation = self._generation
            conn = self._local.conn = self._connect(check=check)
        return conn

    def _replaced(self) -> bool:
        """True when the path no longer names the file this store opened."""
        try:
            return _file_identity(self.path) != self._identity
        except FileNotFoundError:
            return True

    def _reopen(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """The file was deleted or replaced under us: say so, and open what the path names now."""
        if conn is not None:
            lost = "an unknown number of"
            with contextlib.suppress(sqlite3.Error):
                lost = str(
                    conn.execute(
                        "SELECT count(*) FROM backbeat_tasks "
                        "WHERE state IN ('held', 'pending', 'running')"
                    ).fetchone()[0]
                )
            logger.error(
                "backbeat: the SQLite store %s was deleted or replaced while open; %s "
                "unfinished task(s) in it are gone. Writes in flight are refused (503); "
                "the store is opened again at that path.",
                self.path,
                lost,
            )
            conn.close()
        self._identity = None
        self._generation += 1
        try:
            return self._connect()
        except StoreError as exc:
            logger.error("backbeat: cannot open the SQLite store again: %s", exc)
            return None

    # --- the writer ----------------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop,
                        name=f"backbeat-sqlite-{self.path.name}",
                        daemon=True,
                    )
                    self._writer.start()
        write = _Write(fn)
        self._writes.put(write)
        return write.future

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._submit(fn))

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        with contextlib.suppress(StoreError):  # each batch reports it, and tries again
            conn = self._connect()
        try:
            while True:
                first = self._writes.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while True:
                    try:
                        more = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                conn = self._commit(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit(
        self, conn: sqlite3.Connection | None, batch: list[_Write]
    ) -> sqlite3.Connection | None:
        """Run a batch in one transaction; returns the connection to use next."""
        # A write whose caller gave up before we got to it is not done at all.
        live = [write for write in batch if write.future.set_running_or_notify_cancel()]
        if not live:
            return conn
        if conn is None or self._replaced():
            # Never write into a file nobody else can see: refuse, and open anew.
            gone = conn is not None
            conn = self._reopen(conn)
            reason = "was deleted or replaced" if gone else "cannot be opened"
            refusal = StoreUnavailable(f"the SQLite store {str(self.path)!r} {reason}")
            for write in live:
                write.future.set_exception(refusal)
            return conn
        try:
            try:
                outcomes = self._transaction(conn, live, isolate=False)
            except _WriteFailed:
                # Some write raised: do the batch again, each write in a savepoint,
                # so that it fails alone and the others still commit.
                outcomes = self._transaction(conn, live, isolate=True)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error: StoreError = StoreError(f"write to {str(self.path)!r} failed: {exc}")
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                # Give the WAL's space back, so the volume can recover once room is made.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                error = StoreUnavailable(f"the disk holding {str(self.path)!r} is full")
            logger.error("backbeat: %s", error)
            for write in live:
                write.future.set_exception(error)
            return conn
        self.transactions += 1
        for write, (result, error_or_none) in zip(live, outcomes, strict=True):
            if error_or_none is None:
                write.future.set_result(result)
            elif isinstance(error_or_none, sqlite3.Error):
                write.future.set_exception(
                    StoreError(f"write to {str(self.path)!r} failed: {error_or_none}")
                )
            else:
                write.future.set_exception(error_or_none)
        return conn

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, writes: list[_Write], *, isolate: bool
    ) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for write in writes:
            if not isolate:
                try:
                    outcomes.append((write.fn(conn), None))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    raise _WriteFailed from exc
                continue
            conn.execute("SAVEPOINT op")
            try:
                outcomes.append((write.fn(conn), None))
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                outcomes.append((None, exc))
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
        return outcomes

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.close_sync)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- writes ---------------------------------------------------------------------------

    async def enqueue(self, tasks: list[NewTask]) -> None:
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
                t.held_until,
            )
            for t in tasks
        ]
        loop = asyncio.get_running_loop()
        batch = self._enqueues.get(loop)
        if batch is None:
            batch = self._enqueues[loop] = []
            loop.call_soon(self._flush_enqueues, loop)
        done: asyncio.Future[None] = loop.create_future()
        batch.append((rows, done))
        await done

    def _flush_enqueues(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._enqueues.pop(loop)
        try:
            future = self._submit(functools.partial(_insert_groups, [rows for rows, _ in batch]))
        except StoreError as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return

        def resolve(outcome: asyncio.Future[list[BaseException | None]]) -> None:
            error = outcome.exception()
            for index, (_, done) in enumerate(batch):
                if done.done():
                    continue
                failure = error or outcome.result()[index]
                if failure is None:
                    done.set_result(None)
                else:
                    done.set_exception(failure)

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
                    claimed.append(ClaimedTask(*row))
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
    ) -> list[ClaimedTask]:
        def take(conn: sqlite3.Connection) -> list[ClaimedTask]:
            now = time.time()
            for task_id, name, error in conn.execute(
                _DEAD_LOST, {"now": now, "max_lost": max_lost}
            ).fetchall():
                logger.error("Background task %r (id %s) failed: %s", name, task_id, error)
            parameters = {"now": now, "until": now + lease, "worker": worker, "limit": limit}
            if alone_first:
                rows = conn.execute(_CLAIM_SUSPECT, parameters).fetchall()
                if rows:
                    return [ClaimedTask(*row[:-1]) for row in rows]  # never corrupt: it ran
            claimed: list[list[Any]] = []
            corrupt: list[list[Any]] = []
            for *row, is_corrupt in conn.execute(_CLAIM_ANY, parameters).fetchall():
                (corrupt if is_corrupt else claimed).append(row)
            for row in corrupt:
                logger.error("backbeat: task %r (id %s): %s", row[1], row[0], _CORRUPT_AFTER)
                conn.execute(
                    "UPDATE backbeat_tasks SET state = 'failed', finished_at = ?, error = ?, "
                    "lease_until = NULL WHERE id = ?",
                    (now, _CORRUPT_AFTER, row[0]),
                )
            return [ClaimedTask(*row) for row in claimed]

        return await self._write(take)

    async def renew(self, worker: str, ids: list[str], lease: float) -> list[str]:
        def extend(conn: sqlite3.Connection) -> list[str]:
            until = time.time() + lease
            lost = []
            for task_id in ids:
                cursor = conn.execute(
                    "UPDATE backbeat_tasks SET lease_until = ? "
                    "WHERE id = ? AND worker = ? AND state = 'running'",
                    (until, task_id, worker),
                )
                if cursor.rowcount == 0:
                    lost.append(task_id)
            return lost

        return await self._write(extend)

    async def complete(self, worker: str, task_ids: list[str]) -> list[bool]:
        def finish(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            return [
                conn.execute(
                    "UPDATE backbeat_tasks SET state = 'succeeded', finished_at = ?, "
                    "lease_until = NULL WHERE id = ? AND worker = ? AND state = 'running'",
                    (now, task_id, worker),
                ).rowcount
                == 1
                for task_id in task_ids
            ]

        return await self._write(finish)

    async def fail(
        self,
        worker: str,
        task_id: str,
        error: str,
        traceback: str | None,
        retry_at: float | None,
    ) -> bool:
        def record(conn: sqlite3.Connection) -> bool:
            if retry_at is None:
                cursor = conn.execute(
                    "UPDATE backbeat_tasks SET state = 'failed', finished_at = ?, "
                    "lease_until = NULL, error = ?, traceback = ? "
                    "WHERE id = ? AND worker = ? AND state = 'running'",
                    (time.time(), error, traceback, task_id, worker),
                )
            else:
                cursor = conn.execute(
                    "UPDATE backbeat_tasks SET state = 'pending', due_at = ?, "
                    "lease_until = NULL, worker = NULL, error = ?, traceback = ? "
                    "WHERE id = ? AND worker = ? AND state = 'running'",
                    (retry_at, error, traceback, task_id, worker),
                )
            return cursor.rowcount == 1

        return await self._write(record)

    async def release(self, worker: str, ids: list[str]) -> None:
        def give_back(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE backbeat_tasks SET state = 'pending', attempts = MAX(attempts - 1, 0), "
                "lease_until = NULL, worker = NULL WHERE id = ? AND worker = ? "
                "AND state = 'running'",
                [(task_id, worker) for task_id in ids],
            )

        await self._write(give_back)

    async def cancel(self, ids: list[str], reason: str) -> None:
        def stop(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE backbeat_tasks SET state = 'cancelled', finished_at = ?, error = ?, "
                "lease_until = NULL WHERE id = ? AND state IN ('held', 'pending', 'running')",
                [(time.time(), reason, task_id) for task_id in ids],
            )

        await self._write(stop)

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

    async def purge(self, finished_before: float, states: tuple[str, ...] = FINISHED_STATES) -> int:
        unknown = set(states) - set(FINISHED_STATES)
        if unknown:
            raise ValueError(f"only finished tasks can be purged, not {sorted(unknown)}")

        def delete(conn: sqlite3.Connection) -> int:
            marks = ", ".join("?" for _ in states)
            return conn.execute(
                f"DELETE FROM backbeat_tasks WHERE state IN ({marks}) AND finished_at < ?",
                (*states, finished_before),
            ).rowcount

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
        def soonest() -> float | None:
            rows = self._read(
                "SELECT min(due_at) FROM backbeat_tasks WHERE state = 'pending' AND due_at > ?",
                (time.time(),),
            )
            return rows[0][0] if rows else None

        return await anyio.to_thread.run_sync(soonest)

    async def counts(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self.counts_sync)

    def failures_sync(self, limit: int) -> list[StoredStatus]:
        rows = self._read(
            f"SELECT {_STATUS_COLUMNS} FROM backbeat_tasks WHERE state = 'failed' "
            "ORDER BY finished_at DESC LIMIT ?",
            (limit,),
        )
        return [StoredStatus(*row) for row in rows]

    async def failures(self, limit: int) -> list[StoredStatus]:
        return await anyio.to_thread.run_sync(self.failures_sync, limit)

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite store {str(self.path)!r}: {exc}") from exc
