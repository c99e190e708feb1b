"""The PostgreSQL store's connections: an asyncpg pool on the event loop that uses it, the
schema made or upgraded when the pool is made, and each operation run on a connection
borrowed for that operation only (a transaction, or one read) and given back at once.

Connection budget per store object: at most ``pool_size`` connections (default 10, the
URL's ``pool_size``), one more per process for LISTEN (`backbeat.stores.postgres_listen`).
A worker holds none while its tasks run: claims, renewals and outcomes each borrow one for
their statement.

The pool keeps no floor of idle connections (``min_size=0``): a connection lost is made
again by the next operation that needs one. (With a floor, asyncpg reconnects in the
background, and logs a traceback for every try while the server is down.) A server lost
and found again is logged once per process, whatever the number of store objects and
connections that see it (`Outages`): one WARNING line when an operation first finds it
unreachable, one when an operation goes through again.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from backbeat.stores.base import StoreError, StoreMissing, StoreUnavailable
from backbeat.stores.postgres_sql import (
    CREATE_VERSION_TABLE,
    LOCK_SCHEMA,
    READ_VERSION,
    SCHEMA_VERSION,
    UPGRADES,
    WRITE_VERSION,
    Schema,
)

T = TypeVar("T")

logger = logging.getLogger("backbeat")

# A transaction PostgreSQL aborted to break a deadlock is run again, up to this many times.
_TRIES = 3


def asyncpg() -> Any:
    """The asyncpg module (an optional extra: imported when a store connects)."""
    try:
        return importlib.import_module("asyncpg")
    except ImportError:
        raise StoreError(
            "the PostgreSQL store needs asyncpg: pip install 'backbeat[postgres]'"
        ) from None


class Database:
    """The pool of one store object, made on first use on the running event loop."""

    def __init__(
        self,
        dsn: str,
        schema: Schema,
        *,
        pool_size: int,
        timeout: float,
        create: bool,
        described: str,
        statement_cache: bool = True,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.timeout = timeout
        self.create = create
        self.described = described  # the store, as messages name it (no password)
        self.statement_cache = statement_cache
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    async def connect(self) -> Any:
        """A connection of its own, outside the pool (the listener's, a compaction's)."""
        return await asyncpg().connect(
            self.dsn,
            timeout=self.timeout,
            statement_cache_size=100 if self.statement_cache else 0,
        )

    async def pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or the loop it was made on ended
            self._pool, self._loop, self._opening = None, loop, asyncio.Lock()
        assert self._opening is not None
        async with self._opening:
            if self._pool is None:
                self._pool = await self._make_pool()
        return self._pool

    async def _make_pool(self) -> Any:
        pg = asyncpg()
        pool = pg.create_pool(
            self.dsn,
            min_size=0,
            max_size=self.pool_size,
            timeout=self.timeout,
            command_timeout=max(self.timeout, 30.0),
            statement_cache_size=100 if self.statement_cache else 0,
            # A connection given back keeps no state of ours (no session settings, listens
            # or session locks): asyncpg's reset would cost a round trip for every
            # borrowing. An open transaction is still rolled back.
            reset=_keep_as_is,
        )
        try:
            await pool  # connects nothing: the set-up's connection is its first
            try:
                conn = await pool.acquire()
            except (OSError, TimeoutError, pg.PostgresConnectionError) as exc:
                OUTAGES.lost(self.described, exc)
                raise StoreUnavailable(f"cannot connect to {self.described}: {exc}") from exc
            except pg.PostgresError as exc:  # refused: no such database, user, password
                raise StoreError(f"cannot open {self.described}: {exc}") from exc
            try:
                async with conn.transaction():
                    await self._set_up(conn)
            finally:
                await pool.release(conn)
        except BaseException:
            await pool.close()
            raise
        OUTAGES.answered(self.described)
        return pool

    async def _set_up(self, conn: Any) -> None:
        """Create the schema, or bring one an older backbeat made up to this one's version."""
        sql = self.schema
        await conn.execute(LOCK_SCHEMA, sql.name)
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{sql.quoted}.schema_version")
        if exists is None:
            if not self.create:
                raise StoreMissing(f"no backbeat store in {self.described} (nothing was created)")
            await conn.execute(sql(CREATE_VERSION_TABLE))
        version = await conn.fetchval(sql(READ_VERSION)) or 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.described} was made by a newer backbeat (schema version {version}; "
                f"this one knows up to {SCHEMA_VERSION}): upgrade backbeat"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(sql(UPGRADES[step]))
            await conn.execute(sql(WRITE_VERSION), step, time.time())

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.close()

    async def transaction(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn` in a transaction on a pooled connection; again if PostgreSQL aborted it
        to break a deadlock (or a serialization failure)."""
        return await self._retrying(fn, transaction=True)

    async def statement(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn`, statements each atomic by itself, on a pooled connection outside any
        transaction (saving BEGIN's and COMMIT's round trips); again if PostgreSQL aborted
        one to break a deadlock (an aborted statement did nothing)."""
        return await self._retrying(fn, transaction=False)

    async def _retrying(self, fn: Callable[[Any], Awaitable[T]], transaction: bool) -> T:
        for attempt in range(1, _TRIES + 1):
            try:
                return await self._borrowing(fn, transaction=transaction)
            except asyncpg().TransactionRollbackError:
                if attempt == _TRIES:
                    raise
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn` on a pooled connection, outside any transaction (one statement)."""
        return await self._borrowing(fn, transaction=False)

    async def _borrowing(self, fn: Callable[[Any], Awaitable[T]], transaction: bool) -> T:
        pg = asyncpg()
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                try:
                    if not transaction:
                        done = await fn(conn)
                    else:
                        async with conn.transaction():
                            done = await fn(conn)
                except pg.InterfaceError as exc:
                    if not _lost(conn, pg):  # a mistake in the call, not the connection
                        raise
                    raise self._unavailable(exc) from exc
                except pg.InternalClientError as exc:
                    # The connection's protocol lost its footing (its server died in the
                    # middle of an exchange): never lent again.
                    if not _lost(conn, pg):
                        conn.terminate()
                    raise self._unavailable(exc) from exc
        except (
            OSError,
            TimeoutError,
            pg.PostgresConnectionError,
            pg.OperatorInterventionError,  # shutting down, a connection terminated
            pg.InternalClientError,  # the pool's reset of a connection that was dying
        ) as exc:
            raise self._unavailable(exc) from exc
        OUTAGES.answered(self.described)
        return done

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        OUTAGES.lost(self.described, exc)
        return StoreUnavailable(f"{self.described} cannot be reached: {exc}")


async def _keep_as_is(conn: Any) -> None:
    """A pooled connection's reset (`create_pool`'s ``reset``): nothing to undo."""


class Outages:
    """The stores this process last found unreachable, and since when: one WARNING line
    when an operation first finds a store's server gone, one when an operation goes
    through again, whatever the number of store objects (a worker has two, on two threads)
    and of operations that fail meanwhile. A store never reached yet logs nothing here:
    at start-up, `backbeat.engine.connecting` says it is waiting."""

    def __init__(self) -> None:
        self._reached: set[str] = set()
        self._since: dict[str, float] = {}  # monotonic
        self._lock = threading.Lock()

    def lost(self, store: str, exc: BaseException) -> None:
        with self._lock:
            if store not in self._reached or store in self._since:
                return
            self._since[store] = time.monotonic()
        logger.warning(
            "backbeat: %s cannot be reached (%s: %s); its operations fail until it answers",
            store,
            type(exc).__name__,
            exc,
        )

    def answered(self, store: str) -> None:
        if store in self._reached and store not in self._since:  # the usual case: no lock
            return
        with self._lock:
            self._reached.add(store)
            since = self._since.pop(store, None)
        if since is not None:
            logger.warning(
                "backbeat: %s answers again, after %.1fs", store, time.monotonic() - since
            )


OUTAGES = Outages()


def _lost(conn: Any, pg: Any) -> bool:
    """Whether a borrowed connection died (closed, or taken back by the pool, which saw it
    die)."""
    try:
        return bool(conn.is_closed())
    except pg.InterfaceError:
        return True
