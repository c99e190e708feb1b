"""One SQLite file, opened right: what `SQLiteStore` writes and reads through.

* Created private (0600; SQLite gives the -wal and -shm files the same mode),
  in directories created 0700; never created when ``create=False``.
* WAL journal, ``synchronous=NORMAL``, a busy timeout; the WAL is checkpointed
  every ~1.6 MB and truncated to 1 MiB after a checkpoint, so it cannot eat a
  small volume; a full disk fails the write (`StoreUnavailable`) and gives the
  WAL's space back, so writes work again as soon as there is room.
* Checked when opened (``quick_check``, up to 1 GiB): corrupt pages are a
  `StoreError`, not a surprise later.
* Every write goes through one writer thread, off the event loop. It takes
  whatever operations are queued, runs them in one ``BEGIN IMMEDIATE``
  transaction and commits once: many concurrent requests share one fsync
  (group commit). If one operation raises, the batch runs again with each in
  a savepoint, so it fails alone.
* Before each batch the writer checks that the path still names the file it
  has open: a store deleted or replaced under a running server is reported,
  refused (`StoreUnavailable`: a 503, never a 2xx for a task written into an
  unlinked file) and opened anew.
* Reads use a connection per thread and see what any process committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from backbeat.stores.base import StoreError, StoreMissing, StoreUnavailable

T = TypeVar("T")

logger = logging.getLogger("backbeat")

# Check the whole file at start-up only up to this size: quick_check reads every page.
_QUICK_CHECK_LIMIT = 1 << 30
# Checkpoint the WAL every ~1.6 MB of changes (400 pages; at 100 the checkpoints took a
# fifth of the writer's time), and truncate it back to 1 MiB after a checkpoint: on a
# small volume the WAL must not grow into the space the data needs.
_WAL_AUTOCHECKPOINT_PAGES = 400
_JOURNAL_SIZE_LIMIT = 1 << 20


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


class SQLiteFile:
    """The connections to one SQLite file: a writer thread, and a reader per thread."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        create: bool,
        setup: Callable[[sqlite3.Connection], None],
        count_unfinished: str,
        make_directories: bool = True,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.create = create
        self.make_directories = make_directories
        self.setup = setup  # creates the schema, idempotently
        self.count_unfinished = count_unfinished  # SQL: the tasks lost if the file goes
        self.transactions = 0  # commits made: tells how well writes were grouped
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._local = threading.local()
        # Which file the path named when it was opened, and how many times it was
        # opened again since (read connections of an older generation are stale).
        self._identity: tuple[int, int] | None = None
        self._generation = 0

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _create_private(self) -> bool:
        """Make the file (and missing directories) readable by this user only; False when
        another process made it first.

        Task arguments are in it. SQLite gives the -wal and -shm files the
        mode of the database file, so they are private too.
        """
        missing = []
        parent = self.path.absolute().parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        if missing and not self.make_directories:
            raise StoreUnavailable(
                f"the directory {str(missing[-1])!r} of the SQLite store {str(self.path)!r} "
                "does not exist (a volume not mounted yet?); create it to start with an "
                "empty store"
            )
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            if not self.create:
                raise StoreMissing(f"no store at {self.path.absolute()}")
            try:
                created = self._create_private()
            except StoreUnavailable:
                raise
            except OSError as exc:
                raise StoreError(
                    f"cannot create the SQLite store {str(self.path)!r}: {exc}"
                ) from exc
            if created:  # loud on purpose: a relative path from the wrong directory too
                logger.warning("backbeat: no store at %s: created a new, empty one", self.path)
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
            # The first connection to this file (or to what replaced it) checks its pages.
            check = self._identity is None
            if check and self.path.stat().st_size <= _QUICK_CHECK_LIMIT:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    conn.close()
                    raise StoreError(
                        f"the SQLite store {str(self.path)!r} is corrupt ({'; '.join(problems)}): "
                        "restore it from a backup, or move it away to start with an empty store"
                    )
            self.setup(conn)
            if self._identity is None:
                self._identity = _file_identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}") from exc
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's read connection (a new one once the file was opened anew)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            conn.close()
            conn = None
        if conn is None:
            self._local.generation = self._generation
            conn = self._local.conn = self._connect()
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
                lost = str(conn.execute(self.count_unfinished).fetchone()[0])
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
            # Each write that meets it is refused and says why (a 503 and its log line).
            logger.log(
                logging.ERROR if conn is not None else logging.DEBUG,
                "backbeat: cannot open the SQLite store again: %s",
                exc,
            )
            return None

    # --- the writer ----------------------------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
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

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

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
            # Never write into a file nobody else can see: refuse, and open anew. A file
            # that could not be opened before (a volume mounted since) takes this batch.
            gone = conn is not None
            conn = self._reopen(conn)
            if gone or conn is None:
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

    def close(self) -> None:
        """Stop the writer and close this thread's reader; the next use opens them again."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._writes.put(None)
                writer.join()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def read(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any]) -> list[Any]:
        try:
            return self.connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite store {str(self.path)!r}: {exc}") from exc
