"""The PostgreSQL store, through asyncpg (``pip install "backbeat[postgres]"``).

URL: ``postgresql://[user[:password]@]host[:port]/database[?schema=NAME]`` (also
``postgres://``; other query options go to asyncpg: ``sslmode`` …). Every table lives in
the schema NAME (default ``backbeat``), which `open` creates and upgrades, once whatever
the number of processes opening it (`backbeat.stores.postgres_sql`).

* A claim is one statement that locks its candidates with ``FOR UPDATE SKIP LOCKED`` (on
  partial indexes: priority, then due time), sized to the caller's free slots, and starts
  them; claims in many processes never wait for one another.
* Each claim raises the task's fencing ``token`` (never lowered); the receipt names it, and
  renew, finish, progress and release are refused for any other.
* `wait` is woken by LISTEN/NOTIFY (`backbeat.stores.postgres_listen`), sent by the writes
  that make work runnable, never by claims, renewals or outcomes.
* `enqueue_on` writes tasks on the app's own connection, in its transaction
  (`backbeat.stores.postgres_callers`): committed with it, woken at its commit, never
  there if it rolls back.
* Connections come from a pool, each for one transaction: none is held while a task runs.
  PostgreSQL unreachable: `StoreUnavailable`, and the pool connects again on the next call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from backbeat.batching import TurnGroup
from backbeat.gates import LONGEST_WINDOW
from backbeat.status import FINISHED
from backbeat.stores import postgres_claims as claims
from backbeat.stores import postgres_reads as reads
from backbeat.stores.base import (
    ClaimedTask,
    GatedShare,
    NewTask,
    ScheduleRecord,
    Settlement,
    StoredStatus,
    StoreError,
    WorkerInfo,
    check_purgeable,
    split_receipt,
)
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage
from backbeat.stores.postgres_callers import caller_fetch, caller_fetch_blocking
from backbeat.stores.postgres_listen import Listener, listener_for
from backbeat.stores.postgres_maintenance import GIVE_UP_LEASE, Upkeep
from backbeat.stores.postgres_pool import Database
from backbeat.stores.postgres_schedules import DECLARE, SELECT_ALL, fire, record
from backbeat.stores.postgres_schedules import PAUSE as PAUSE_SCHEDULE
from backbeat.stores.postgres_sql import (
    BEAT,
    CANCEL_RUNNING,
    CANCEL_WAITING,
    DELETE,
    FORGET_LONG_GONE,
    FORGET_OLD_STARTS,
    FORGET_WORKER,
    LOOK_AT_QUEUE,
    OPEN_LINES,
    PAUSE_QUEUE,
    PAUSED,
    PURGE_WHERE,
    RESUME_QUEUE,
    RUN_NOW,
    SOONEST,
    TAKE_OVER,
    WORKERS,
    Schema,
)
from backbeat.stores.postgres_writes import (
    duplicates_named,
    insert_groups,
    insert_steps,
    keep_progress,
    needs_transaction,
    notify,
    requeue_failed,
    run_steps,
    run_steps_blocking,
)
from backbeat.stores.searching import check_scan, check_search
from backbeat.stores.wakeups import DueHint

logger = logging.getLogger("backbeat")


def _yes(value: str) -> bool:
    if value.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError(f"{value!r} is neither yes nor no")
    return value.lower() in ("yes", "true", "1")


def _count(status: str) -> int:
    """The row count of a command's status ("UPDATE 3")."""
    return int(status.rpartition(" ")[2] or 0)


class PostgresStore:
    """Tasks in a PostgreSQL schema; one pool per event loop (`twin` makes another)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "backbeat",
        pool_size: int = 10,
        timeout: float = 5.0,
        pgbouncer: bool = False,
        create: bool = True,
        key_window: float = 0.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise StoreError(f"not a PostgreSQL URL: {url!r} (postgresql://host/database)")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            schema = query.pop("schema", schema)
            pool_size = int(query.pop("pool_size", pool_size))
            timeout = float(query.pop("timeout", timeout))
            pgbouncer = _yes(query.pop("pgbouncer", "yes" if pgbouncer else "no"))
            key_window = float(query.pop("key_window", key_window))
        except ValueError as exc:
            raise StoreError(f"bad PostgreSQL URL option in {url!r}: {exc}") from None
        self.url = url
        self.schema = Schema(schema)
        self.pool_size = pool_size
        self.timeout = timeout
        # Behind PgBouncer in transaction pooling: no LISTEN (a session's state), so `wait`
        # polls, and no prepared statements kept across transactions.
        self.pgbouncer = pgbouncer
        self.create = create
        # Seconds a finished task's idempotency key still answers its id (0: while it is
        # live only, as on every store).
        self.key_window = key_window
        self._upkeep = Upkeep(key_window=key_window)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        self._described = f"PostgresStore({where}, schema={self.schema.name!r})"
        self._db = Database(
            urlunsplit(parts._replace(query=urlencode(query))),
            self.schema,
            pool_size=pool_size,
            timeout=timeout,
            create=create,
            described=self._described,
            statement_cache=not pgbouncer,
        )
        self._shares = GatedShare()
        # Whether a gated line was seen: then claims take the path that serves lines.
        self._lines = False
        # When the claim that ran last saw the next due time, and what it was.
        self._due_hint = DueHint()
        self._enqueues: TurnGroup[list[NewTask], list[str]] = TurnGroup(
            lambda groups: asyncio.ensure_future(self._enqueue_groups(groups)),
            done=self._wake_here,
        )

    # A finished task is in the hot table until the next upkeep step, then in `finished`.
    _tables = ("{s}.tasks", "{s}.finished")

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        return cls(url, create=create)

    def __repr__(self) -> str:
        return self._described

    def twin(self) -> PostgresStore:
        return PostgresStore(
            self.url,
            schema=self.schema.name,
            pool_size=self.pool_size,
            timeout=self.timeout,
            pgbouncer=self.pgbouncer,
            create=self.create,
            key_window=self.key_window,
        )

    # --- connections ----------------------------------------------------------------------

    def _listener(self) -> Listener:
        return listener_for(self._db.dsn, self.schema.channel, self._db.connect)

    async def open(self) -> None:
        await self._db.pool()
        logger.info("backbeat: task store: %r", self)

    async def close(self) -> None:
        await self._listener().close()
        await self._db.close()

    def _wake_here(self) -> None:
        """Wake this process's waiting workers (other processes hear the NOTIFY)."""
        self._listener().wakeups.notify()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the store contract
        listener = self._listener()
        if not self.pgbouncer:
            await listener.listen()
        due = await self._next_due()
        if due is not None:
            timeout = min(timeout, max(due - time.time(), 0.0) + 0.001)
        await listener.wakeups.wait(timeout)

    async def _next_due(self) -> float | None:
        if self._due_hint.fresh():
            return self._due_hint.soonest

        async def soonest(conn: Any) -> float | None:
            found: float | None = await conn.fetchval(self.schema(SOONEST), time.time())
            return found

        return await self._db.read(soonest)

    # --- writes ---------------------------------------------------------------------------

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        """Insert tasks. Enqueues made in one turn of the event loop become one write."""
        for task in tasks:
            self._due_hint.sooner(task.due_at)
        return await self._enqueues.call(tasks)

    async def enqueue_on(self, connection: object, tasks: list[NewTask]) -> list[str]:
        """`enqueue` on the app's async connection, in its open transaction (never begun,
        committed or rolled back here): the tasks are there, and workers woken (NOTIFY),
        when it commits. A key a live task holds leaves the transaction as it was. An id
        that exists: `DuplicateTask`, and the transaction is aborted, as by any error."""
        fetch = await caller_fetch(connection)
        await self._db.pool()  # the schema exists: made, if need be, on a connection of ours
        with duplicates_named(tasks):
            ids = await run_steps(insert_steps(self.schema, tasks, self.key_window), fetch)
        for task in tasks:
            self._due_hint.sooner(task.due_at)
        return ids

    def enqueue_on_blocking(self, connection: object, tasks: list[NewTask]) -> list[str]:
        """`enqueue_on` for a blocking connection (psycopg's, Django's): the same statements.
        The store must have been opened (the schema made) before."""
        fetch = caller_fetch_blocking(connection)
        with duplicates_named(tasks):
            ids = run_steps_blocking(insert_steps(self.schema, tasks, self.key_window), fetch)
        for task in tasks:
            self._due_hint.sooner(task.due_at)
        return ids

    async def _enqueue_groups(self, groups: list[list[NewTask]]) -> list[list[str] | BaseException]:
        every = [task for group in groups for task in group]
        if needs_transaction(every, self.key_window):
            return await self._db.transaction(
                lambda conn: insert_groups(conn, self.schema, groups, self.key_window)
            )
        # The usual write: its INSERT alone, with no BEGIN, SAVEPOINT or COMMIT to wait for.
        return await self._db.statement(
            lambda conn: insert_groups(conn, self.schema, groups, in_transaction=False)
        )

    async def activate(self, ids: list[str]) -> None:
        await self._db.transaction(
            lambda conn: claims.activate(conn, self.schema, ids, time.time())
        )
        self._wake_here()

    async def activate_and_claim(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        async def write(conn: Any) -> list[ClaimedTask]:
            now = time.time()
            return await claims.activate_and_claim(
                conn, self.schema, (now, now + lease, worker), ids, limit
            )

        claimed = await self._db.transaction(write)
        if len(claimed) < len(ids):
            self._wake_here()  # some were only activated
        return claimed

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
        now = time.time()
        taking = (now, now + lease, worker)
        taken: list[ClaimedTask] = []
        if not self._lines:
            # The usual case: one statement; chores and gated lines only when it saw some.
            taken, soonest, self._lines, chores = await self._db.statement(
                lambda conn: claims.quick_claim(
                    conn, self.schema, taking, limit, max_lost, alone_first, queues
                )
            )
            self._due_hint.seen(soonest)
            if chores:
                any_line = await self._db.transaction(
                    lambda conn: claims.chores(conn, self.schema, time.time(), max_lost)
                )
                self._lines = self._lines or any_line
            if not self._lines or len(taken) >= limit or (taken and alone_first):
                return taken

        async def take(conn: Any) -> list[ClaimedTask]:
            rows, soonest, self._lines = await claims.claim(
                conn,
                self.schema,
                self._shares,
                taking,
                limit - len(taken),
                max_lost,
                alone_first and not taken,
                queues,
            )
            self._due_hint.seen(soonest)
            return rows

        return taken + await self._db.transaction(take)

    async def warm_up(self, queues: tuple[str, ...] | None) -> None:
        await claims.warm_up(await self._db.pool(), self.schema, queues, self._db.timeout)

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        return await self._db.transaction(
            lambda conn: claims.renew(conn, self.schema, receipts, lease)
        )

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        for settlement in settlements:
            if settlement.retry_at is not None:
                self._due_hint.sooner(settlement.retry_at)
        if len({settlement.state for settlement in settlements}) == 1:
            return await self._db.statement(
                lambda conn: claims.settle_alike(conn, self.schema, settlements)
            )
        return await self._db.transaction(
            lambda conn: claims.settle(conn, self.schema, settlements)
        )

    async def progress(self, receipt: str, document: str) -> bool:
        async def keep(conn: Any) -> bool:
            return await keep_progress(conn, self.schema, document, *split_receipt(receipt))

        return await self._db.transaction(keep)

    async def release(self, receipts: list[str]) -> None:
        await self._db.transaction(lambda conn: claims.release(conn, self.schema, receipts))
        self._wake_here()

    async def cancel(self, ids: list[str], reason: str) -> int:
        async def stop(conn: Any) -> int:
            waiting = await conn.execute(self.schema(CANCEL_WAITING), time.time(), reason, ids)
            running = await conn.execute(self.schema(CANCEL_RUNNING), reason, ids)
            return _count(waiting) + _count(running)

        return await self._db.transaction(stop)

    async def retry(self, ids: list[str] | None) -> int:
        async def again(conn: Any) -> int:
            rows = await requeue_failed(conn, self.schema, ids)
            gated = [row for row in rows if row[0] is not None]
            if gated:  # their lines may have been forgotten: written again
                await conn.execute(self.schema(OPEN_LINES), *zip(*gated, strict=True))
            if rows:
                await notify(conn, self.schema, [queue for _, queue, _ in rows])
            return len(rows)

        count = await self._db.transaction(again)
        self._wake_here()
        return count

    async def purge(
        self,
        finished_before: float,
        states: tuple[str, ...] = FINISHED,
        *,
        dry_run: bool = False,
    ) -> int:
        check_purgeable(states)
        tables = [self.schema(PURGE_WHERE.replace("{table}", t)) for t in self._tables]

        async def delete(conn: Any) -> int:
            if dry_run:
                counted = [
                    await conn.fetchval(f"SELECT count(*) {where}", states, finished_before)
                    for where in tables
                ]
                return sum(counted)
            # Start times no rate window reaches any more (keyed gates leave them behind).
            await conn.execute(self.schema(FORGET_OLD_STARTS), time.time() - LONGEST_WINDOW)
            deleted = [
                await conn.execute(f"DELETE {where}", states, finished_before) for where in tables
            ]
            return sum(map(_count, deleted))

        return await self._db.transaction(delete)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> StoredStatus | None:
        row = await self._db.read(lambda conn: conn.fetchrow(self.schema(reads.GET), task_id))
        if row is None:
            return None
        *fields, after = row
        found = StoredStatus(*fields)
        found.after = tuple(after or ())
        return found

    async def queues(self) -> list[str]:
        rows = await self._db.read(lambda conn: conn.fetch(self.schema(reads.QUEUES)))
        return [queue for (queue,) in rows]

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        return await self._db.read(lambda conn: reads.counts(conn, self.schema, queue))

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        return await self._db.read(
            lambda conn: reads.list_tasks(conn, self.schema, state, queue, name, limit, before)
        )

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        check_search(where, limit, scan)
        # A cursor lives in a transaction (read only: it takes no lock).
        return await self._db.transaction(
            lambda conn: reads.search(conn, self.schema, where, limit, before, scan)
        )

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        check_scan(scan)
        return await self._db.read(lambda conn: reads.failure_groups(conn, self.schema, scan))

    async def oldest_due(self, queue: str | None = None) -> float | None:
        return await self._db.read(
            lambda conn: conn.fetchval(self.schema(reads.OLDEST_DUE), time.time(), queue)
        )

    async def run_now(self, ids: list[str]) -> int:
        async def due_now(conn: Any) -> int:
            rows = await conn.fetch(self.schema(RUN_NOW), time.time(), ids)
            gated = [row for row in rows if row[0] is not None]
            if gated:  # a gated task's line is looked at from now
                await conn.execute(self.schema(OPEN_LINES), *zip(*gated, strict=True))
            if rows:
                await notify(conn, self.schema, [queue for _, queue, _ in rows])
            return len(rows)

        count = await self._db.transaction(due_now)
        if count:
            self._due_hint.sooner(time.time())
            self._wake_here()
        return count

    async def delete(self, ids: list[str]) -> int:
        async def remove(conn: Any) -> int:
            deleted = [
                await conn.execute(self.schema(DELETE.replace("{table}", t)), ids)
                for t in self._tables
            ]
            return sum(map(_count, deleted))

        return await self._db.transaction(remove)

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        rows = await self._db.read(lambda conn: conn.fetch(self.schema(reads.ATTEMPTS), task_id))
        return reads.attempt_records(rows)

    # --- workers --------------------------------------------------------------------------

    async def heartbeat(self, worker: WorkerInfo, expires_in: float) -> None:
        async def beat(conn: Any) -> None:
            now = time.time()
            if expires_in <= 0:
                await conn.execute(self.schema(FORGET_WORKER), worker.name)
                await conn.execute(self.schema(GIVE_UP_LEASE), worker.name)
                return
            worker.seen_at = now
            document = json.dumps(worker.document())
            await conn.execute(self.schema(BEAT), worker.name, document, now + expires_in)
            await conn.execute(self.schema(FORGET_LONG_GONE), now - 3600)

        await self._db.transaction(beat)
        # Only workers beat: one of them at a time keeps the store in shape.
        if expires_in > 0 and self._upkeep.due():
            try:
                await self.upkeep(worker.name)
            except Exception as exc:  # the beat was taken: its caller must not think otherwise
                logger.warning("backbeat: %r: upkeep step failed: %s", self, exc)

    async def upkeep(self, holder: str) -> int | None:
        """One upkeep step (`backbeat.stores.postgres_maintenance`) if `holder` holds its
        lease or takes it: how many finished tasks left the hot table; None when another
        holds it. Workers run it at their heartbeat, at most once a second."""
        return await self._upkeep.step(self._db, self.schema, holder)

    async def workers(self, *, include_expired: bool = False) -> list[WorkerInfo]:
        since = float("-inf") if include_expired else time.time()
        rows = await self._db.read(lambda conn: conn.fetch(self.schema(WORKERS), since))
        return [WorkerInfo.from_document(json.loads(document), at) for document, at in rows]

    async def take_over(self, worker: str) -> list[str]:
        async def expire(conn: Any) -> list[str]:
            await conn.execute(self.schema(FORGET_WORKER), worker)
            rows = await conn.fetch(self.schema(TAKE_OVER), time.time(), worker)
            if rows:
                await notify(conn, self.schema, [self.schema.name])
            return [task_id for (task_id,) in rows]

        ids = await self._db.transaction(expire)
        if ids:
            self._wake_here()
        return ids

    # --- schedules ------------------------------------------------------------------------

    async def schedules(self) -> list[ScheduleRecord]:
        rows = await self._db.read(lambda conn: conn.fetch(self.schema(SELECT_ALL)))
        return [record(row) for row in rows]

    async def declare_schedules(self, schedules: list[tuple[str, str]]) -> None:
        names = [name for name, _ in schedules]
        rules = [rule for _, rule in schedules]
        await self._db.transaction(
            lambda conn: conn.execute(self.schema(DECLARE), names, rules, time.time())
        )

    async def fire_schedule(
        self,
        name: str,
        rule: str,
        tick: int,
        task: NewTask | None,
        note: str = "",
        *,
        skip_if_running: bool = False,
    ) -> ScheduleRecord | None:
        fired = await self._db.transaction(
            lambda conn: fire(conn, self.schema, name, rule, tick, task, note, skip_if_running)
        )
        if fired is not None and fired.note == "enqueued":
            self._wake_here()
        return fired

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        async def pause(conn: Any) -> bool:
            return (
                _count(await conn.execute(self.schema(PAUSE_SCHEDULE), paused, time.time(), name))
                > 0
            )

        return await self._db.transaction(pause)

    # --- queues and limits (the dashboard) ------------------------------------------------

    async def pause_queue(self, queue: str, paused: bool) -> None:
        async def pause(conn: Any) -> None:
            now = time.time()
            if paused:
                await conn.execute(self.schema(PAUSE_QUEUE), queue, now)
                return
            await conn.execute(self.schema(RESUME_QUEUE), queue)
            await conn.execute(self.schema(LOOK_AT_QUEUE), now, queue)
            await notify(conn, self.schema, [queue])

        await self._db.transaction(pause)
        if not paused:
            self._due_hint.forget()  # what the last claim saw left the queue out
            self._wake_here()

    async def paused_queues(self) -> list[str]:
        rows = await self._db.read(lambda conn: conn.fetch(self.schema(PAUSED)))
        return [queue for (queue,) in rows]

    async def gate_usage(self) -> list[GateUsage]:
        return await self._db.transaction(
            lambda conn: reads.gate_usage(conn, self.schema, LONGEST_WINDOW)
        )
