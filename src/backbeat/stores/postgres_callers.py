"""The app's own connections, for writing tasks in the app's transaction
(`PostgresStore.enqueue_on`, `PostgresStore.enqueue_on_blocking`).

Each connection becomes one way to run a statement and read its rows (`Fetch`), on which
`backbeat.stores.postgres_writes` runs its steps. Accepted:

* asyncpg's ``Connection`` (or a pool's), inside ``conn.transaction()``;
* psycopg 3's ``AsyncConnection`` (``Connection`` for blocking code), inside
  ``conn.transaction()`` or, without autocommit, in the transaction psycopg begins for
  its next statement;
* SQLAlchemy's ``AsyncConnection`` and ``AsyncSession``, on the asyncpg or psycopg
  dialect: the statements go through ``exec_driver_sql``, so that SQLAlchemy begins its
  transaction (if it has not yet) as it does for any statement of the app's;
* Django's PostgreSQL connection, inside ``transaction.atomic()``.

Nothing here begins, commits or rolls back the caller's transaction. A connection that
would commit the write on its own (autocommit, outside any transaction) or whose
transaction is aborted is refused before anything is written: ValueError. Any other object:
TypeError.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from backbeat.stores.postgres_writes import Rows

Fetch = Callable[[str, list[Any]], Awaitable[Rows]]
FetchBlocking = Callable[[str, list[Any]], Rows]

_NUMBERED = re.compile(r"\$(\d+)")
_ACCEPTED = (
    "an asyncpg Connection, a psycopg AsyncConnection, or a SQLAlchemy AsyncConnection or "
    "AsyncSession (blocking code: a psycopg Connection or Django's connection)"
)


def _instance(value: object, module: str, *names: str) -> bool:
    """Whether `value` is one of these classes of `module`; False when the module was never
    imported (then nothing can be one of its classes, and it stays unimported)."""
    found = sys.modules.get(module)
    return found is not None and isinstance(value, tuple(getattr(found, n) for n in names))


def _percent(query: str, args: list[Any]) -> tuple[str, list[Any]]:
    """A statement in psycopg's placeholders (``%s``, in order of appearance)."""
    order = [int(number) - 1 for number in _NUMBERED.findall(query)]
    return _NUMBERED.sub("%s", query.replace("%", "%%")), [args[n] for n in order]


async def caller_fetch(connection: object) -> Fetch:
    """How to run statements on an async connection of the app's, in its transaction."""
    if _instance(connection, "asyncpg", "Connection") or _instance(
        connection, "asyncpg.pool", "PoolConnectionProxy"
    ):
        return _asyncpg(connection)
    if _instance(connection, "psycopg", "AsyncConnection"):
        _check_psycopg(connection)
        return _psycopg(connection)
    if _instance(connection, "sqlalchemy.ext.asyncio", "AsyncSession"):
        return await _sqlalchemy(await connection.connection())  # type: ignore[attr-defined]
    if _instance(connection, "sqlalchemy.ext.asyncio", "AsyncConnection"):
        return await _sqlalchemy(connection)
    if _instance(connection, "psycopg", "Connection") or _django(connection):
        raise TypeError(
            f"{type(connection).__name__} is a blocking connection: pass it to "
            "runner.submit(task, connection=...), not to asubmit"
        )
    raise TypeError(f"connection= takes {_ACCEPTED}, not {type(connection).__name__}")


def caller_fetch_blocking(connection: object) -> FetchBlocking:
    """How to run statements on a blocking connection of the app's, in its transaction."""
    if _instance(connection, "psycopg", "Connection"):
        _check_psycopg(connection)
    elif _django(connection):
        if connection.get_autocommit():  # type: ignore[attr-defined]
            raise ValueError(
                "Django's connection is in autocommit: enqueue inside transaction.atomic()"
            )
        if connection.needs_rollback:  # type: ignore[attr-defined]
            raise ValueError("Django's transaction is marked for rollback: nothing is written")
    elif _instance(connection, "psycopg", "AsyncConnection") or _instance(
        connection, "sqlalchemy.ext.asyncio", "AsyncConnection", "AsyncSession"
    ):
        raise TypeError(
            f"{type(connection).__name__} is an async connection: "
            "await runner.asubmit(task, connection=...)"
        )
    else:
        raise TypeError(f"connection= takes {_ACCEPTED}, not {type(connection).__name__}")

    def fetch(query: str, args: list[Any]) -> Rows:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(*_percent(query, args))
            return list(cursor.fetchall()) if cursor.description else []

    return fetch


def _django(connection: object) -> bool:
    return (
        _instance(connection, "django.db.backends.base.base", "BaseDatabaseWrapper")
        and getattr(connection, "vendor", None) == "postgresql"
    )


def _asyncpg(connection: Any) -> Fetch:
    if not connection.is_in_transaction():
        raise ValueError(
            "the asyncpg connection is in no transaction (each statement would commit on "
            "its own): enqueue inside `async with conn.transaction():`"
        )

    async def fetch(query: str, args: list[Any]) -> Rows:
        rows: Rows = await connection.fetch(query, *args)
        return rows

    return fetch


def _check_psycopg(connection: Any) -> None:
    status = sys.modules["psycopg"].pq.TransactionStatus
    state = connection.info.transaction_status
    if state == status.INERROR:
        raise ValueError("the psycopg connection's transaction is aborted: nothing is written")
    if state == status.IDLE and connection.autocommit:
        raise ValueError(
            "the psycopg connection is in autocommit outside a transaction (each statement "
            "would commit on its own): enqueue inside `conn.transaction()`"
        )


def _psycopg(connection: Any) -> Fetch:
    async def fetch(query: str, args: list[Any]) -> Rows:
        async with connection.cursor() as cursor:
            await cursor.execute(*_percent(query, args))
            return list(await cursor.fetchall()) if cursor.description else []

    return fetch


async def _sqlalchemy(connection: Any) -> Fetch:
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver not in ("asyncpg", "psycopg"):
        raise TypeError(
            f"a SQLAlchemy connection on {dialect.name}+{dialect.driver}: the PostgreSQL "
            "store writes on postgresql+asyncpg or postgresql+psycopg"
        )
    raw = await connection.get_raw_connection()
    if raw.dbapi_connection.autocommit:
        raise ValueError(
            "the SQLAlchemy connection is in AUTOCOMMIT (each statement would commit on its "
            "own): enqueue in a transaction of the default isolation level"
        )
    numbered = dialect.driver == "asyncpg"  # its paramstyle is $1, $2 …

    async def fetch(query: str, args: list[Any]) -> Rows:
        statement, ordered = (query, args) if numbered else _percent(query, args)
        result = await connection.exec_driver_sql(statement, tuple(ordered))
        return list(result.all()) if result.returns_rows else []

    return fetch
