"""The PostgreSQL store's upkeep: the hot table ``tasks`` holds live tasks only.

Finished tasks are moved to ``finished`` (same columns), where `get`, `list_tasks`,
`search`, `failure_groups` and `attempts` still find them until `purge` deletes them (the
worker's ``finished_ttl``, `backbeat purge`), as on the other stores. So the claims' partial
indexes and the heap they scan hold what is waiting or running, whatever has run before.

One process at a time does it: the holder of the ``upkeep`` row's lease (a row, not a
session's advisory lock, so that a leader cut off by the network loses it when the lease
runs out, and a pooler in transaction mode keeps nothing of it). Every worker tries at its
heartbeat; one step moves a bounded batch, forgets spent idempotency keys older than the
store's ``key_window``, and vacuums the hot table every thousand rows it moved (autovacuum
would, later: a table whose every row is short-lived is the case its defaults are worst
at). The heap then reuses its space, and gives back its trailing pages once a burst has
passed (VACUUM truncates them); its indexes reuse theirs but give none back: after a burst
they keep the size of its peak.

So when a burst has passed (a step that moved nothing after steps that did) and the hot
table holds few live rows, the leader rebuilds the indexes that are far bigger than those
rows need (``REINDEX INDEX CONCURRENTLY``, PostgreSQL 12 or later), then vacuums the table,
at most once every `COMPACT_EVERY` seconds for the whole store (the ``compaction`` row).
This runs in a thread of its own, on a connection of its own, so that the heartbeat and the
lease renewals that share the leader's thread never wait for it. It cannot deadlock with
claims, writes or reads: it holds only locks none of them conflicts with (SHARE UPDATE
EXCLUSIVE on the table, for the whole rebuild) and waits for the transactions that use the
table, never the other way round; its VACUUM's truncation, as the step's, holds the table
a few milliseconds, and gives it up to any waiter. What does wait for it is another VACUUM
or DDL: the step's VACUUM skips the table meanwhile (``SKIP_LOCKED``). A rebuild cut off
(`COMPACTION_TIMEOUT`, a lost connection) leaves an invalid ``*_ccnew`` index, which
writes may still update: the next compaction drops it first. bench/postgres/size.py
measures it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backbeat.status import FINISHED

if TYPE_CHECKING:  # postgres_sql takes this module's schema step
    from backbeat.stores.postgres_pool import Database
    from backbeat.stores.postgres_sql import Schema

logger = logging.getLogger("backbeat")

_FINISHED = "(" + ", ".join(f"'{state}'" for state in FINISHED) + ")"

VERSION_3 = f"""
CREATE TABLE {{s}}.finished (LIKE {{s}}.tasks);
ALTER TABLE {{s}}.finished ADD PRIMARY KEY (id);
CREATE INDEX finished_at ON {{s}}.finished (state, finished_at);
CREATE INDEX finished_failed ON {{s}}.finished (id) WHERE state = 'failed';
-- What readers look into (`postgres_reads`): a task is in one table or the other. Made with
-- the columns of today: a step that adds one to `tasks` adds it to `finished` and makes
-- this again.
CREATE VIEW {{s}}.every_task AS
    SELECT * FROM {{s}}.tasks UNION ALL SELECT * FROM {{s}}.finished;
-- Vacuumed after a fraction of its rows changed: none of it, for a table whose every row
-- is short-lived; the leader vacuums it too (above).
ALTER TABLE {{s}}.tasks SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000);

-- The lease of the one process that keeps the store in shape.
CREATE TABLE {{s}}.upkeep (
    name text PRIMARY KEY,
    holder text NOT NULL,
    until double precision NOT NULL
);

-- Keys of tasks that finished, with when (written by the trigger that counts them): with a
-- `key_window`, a key keeps answering its task's id that long after it finished, whatever
-- became of the task (moved, purged).
CREATE TABLE {{s}}.spent_keys (
    key text PRIMARY KEY,
    task_id text NOT NULL,
    finished_at double precision NOT NULL
);
CREATE INDEX spent_keys_at ON {{s}}.spent_keys (finished_at);

CREATE OR REPLACE FUNCTION {{s}}.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN {_FINISHED} THEN
        INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
        VALUES (NEW.queue, NEW.state, pg_backend_pid() & 15, 1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + 1;
        IF NEW.key IS NOT NULL THEN
            INSERT INTO {{s}}.spent_keys AS k (key, task_id, finished_at)
            VALUES (NEW.key, NEW.id, coalesce(NEW.finished_at, 0))
            ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
                finished_at = excluded.finished_at;
        END IF;
    END IF;
    IF OLD.state IN {_FINISHED} THEN
        INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
        VALUES (OLD.queue, OLD.state, pg_backend_pid() & 15, -1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n - 1;
    END IF;
    RETURN NULL;
END $$;

-- A task moved from one table to the other is neither counted off nor stripped of its
-- attempts: only one that left both tables is.
CREATE OR REPLACE FUNCTION {{s}}.tasks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
    SELECT queue, state, pg_backend_pid() & 15, -count(*) FROM gone
    WHERE state IN {_FINISHED} AND NOT EXISTS (
        SELECT 1 FROM {{s}}.tasks t WHERE t.id = gone.id
        UNION ALL SELECT 1 FROM {{s}}.finished f WHERE f.id = gone.id)
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + excluded.n;
    DELETE FROM {{s}}.attempts WHERE task_id IN (
        SELECT id FROM gone WHERE NOT EXISTS (
            SELECT 1 FROM {{s}}.tasks t WHERE t.id = gone.id
            UNION ALL SELECT 1 FROM {{s}}.finished f WHERE f.id = gone.id));
    RETURN NULL;
END $$;
CREATE TRIGGER finished_deleted AFTER DELETE ON {{s}}.finished REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.tasks_deleted();
"""

# Finished tasks counted (and their keys kept) once per statement, not once per row: a
# row's trigger upserted the same counts row for each task a statement finished, and cost
# more than the statement's own work (70 µs a task of a 32-task outcome, measured).
_CHANGED = "FROM new_rows n JOIN old_rows o USING (id) WHERE o.state IS DISTINCT FROM n.state"
VERSION_4 = f"""
CREATE OR REPLACE FUNCTION {{s}}.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Claims and renewals: nothing finished nor reopened.
    IF NOT EXISTS (SELECT FROM new_rows WHERE state IN {_FINISHED})
        AND NOT EXISTS (SELECT FROM old_rows WHERE state IN {_FINISHED}) THEN
        RETURN NULL;
    END IF;
    INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
    SELECT queue, state, pg_backend_pid() & 15, sum(n) FROM (
        SELECT n.queue, n.state, 1 AS n {_CHANGED} AND n.state IN {_FINISHED}
        UNION ALL
        SELECT o.queue, o.state, -1 {_CHANGED} AND o.state IN {_FINISHED}) changed
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + excluded.n;
    INSERT INTO {{s}}.spent_keys AS k (key, task_id, finished_at)
    SELECT DISTINCT ON (n.key) n.key, n.id, coalesce(n.finished_at, 0)
    {_CHANGED} AND n.state IN {_FINISHED} AND n.key IS NOT NULL ORDER BY n.key
    ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
        finished_at = excluded.finished_at;
    RETURN NULL;
END $$;
DROP TRIGGER count_finished ON {{s}}.tasks;
CREATE TRIGGER count_finished AFTER UPDATE ON {{s}}.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.count_finished();
"""

# The lease ($1 holder, $2 now, $3 until): taken when free or run out, kept by its holder.
TAKE_LEASE = """
INSERT INTO {s}.upkeep AS u (name, holder, until) VALUES ('upkeep', $1, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE u.holder = excluded.holder OR u.until < $2
RETURNING holder
"""
# A worker that stops gives the lease up: another takes it at its next heartbeat. (The
# ``compaction`` row stays: it says when the store may be compacted next.)
GIVE_UP_LEASE = "DELETE FROM {s}.upkeep WHERE name = 'upkeep' AND holder = $1"
# Finished before $1, at most $2 of them, none another transaction holds (a retry, a
# progress report landing late): copied, then deleted by id in the same transaction.
MOVE = f"""
INSERT INTO {{s}}.finished SELECT * FROM {{s}}.tasks WHERE id IN (
    SELECT id FROM {{s}}.tasks WHERE finished_at < $1 AND state IN {_FINISHED}
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
DELETE_MOVED = "DELETE FROM {s}.tasks WHERE id = ANY($1::text[])"
FORGET_KEYS = "DELETE FROM {s}.spent_keys WHERE finished_at < $1"

# Failed tasks asked to run again ($1 their ids, or all): back in the hot table first.
BRING_BACK = """
INSERT INTO {s}.tasks OVERRIDING SYSTEM VALUE SELECT * FROM {s}.finished
WHERE state = 'failed' AND ($1::text[] IS NULL OR id = ANY($1::text[])) FOR UPDATE
RETURNING id
"""
DELETE_BROUGHT_BACK = "DELETE FROM {s}.finished WHERE id = ANY($1::text[])"

# Rows moved per step, and moved rows after which the leader vacuums the hot table (at most
# once a step): the oftener, the fewer dead rows and index entries it ever holds.
BATCH = 10_000
VACUUM_AFTER = 1000

# The indexes of the hot table a compaction deals with. When it holds fewer than `FEW_ROWS`
# live rows ($3), a valid one that takes more than `INDEX_ROOM` bytes beyond `ROW_ROOM` per
# live row ($1, $2; a fresh index of ours takes under 64 bytes a row) is rebuilt. What a cut
# off rebuild left (invalid, named *_ccnew or *_ccold, numbered after the first) is dropped,
# first, whatever the rows. The rows are counted, not taken from the statistics: the
# VACUUM that would have brought those up to date skips a table autovacuum is at.
FEW_ROWS = 10_000
INDEX_ROOM = 64 * 1024
ROW_ROOM = 256
TO_COMPACT = """
WITH live AS (SELECT count(*) AS n FROM (SELECT FROM {s}.tasks LIMIT $3) AS rows)
SELECT format('%I.%I', n.nspname, c.relname), i.indisvalid
FROM live, pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = '{s}.tasks'::regclass AND CASE WHEN i.indisvalid
    THEN live.n < $3 AND pg_relation_size(c.oid) > $1 + $2 * live.n
    ELSE c.relname ~ '_cc(new|old)[0-9]*$' END
ORDER BY 2, 1
"""
# The store-wide rate limit ($1 holder, $2 now, $3 when the next may start): taken when
# the last one started `COMPACT_EVERY` ago, whichever process ran it.
TAKE_COMPACTION = """
INSERT INTO {s}.upkeep AS u (name, holder, until) VALUES ('compaction', $1, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE u.until <= $2
RETURNING holder
"""
HOT_SIZE = "SELECT pg_total_relation_size('{s}.tasks'::regclass)"
COMPACT_EVERY = 600.0
# Seconds one rebuild or drop may take (it waits for the transactions that use the table,
# and for every older snapshot in the database): then it is cancelled, and what it left
# is dropped by the next compaction.
COMPACTION_TIMEOUT = 60.0


async def bring_back(conn: Any, sql: Schema, ids: list[str] | None) -> None:
    """Failed tasks (these, or all) moved back to the hot table, to be retried there."""
    back = [task_id for (task_id,) in await conn.fetch(sql(BRING_BACK), ids)]
    if back:
        await conn.execute(sql(DELETE_BROUGHT_BACK), back)


class Upkeep:
    """One store object's share of the upkeep: when it next tries, and what it moved.

    `clock` (wall-clock seconds) times the compaction's rate limit, which every process
    of the store shares."""

    def __init__(
        self,
        *,
        every: float = 1.0,
        lease: float = 30.0,
        key_window: float = 0.0,
        clock: Callable[[], float] = time.time,
    ):
        self.every = every
        self.lease = lease
        self.key_window = key_window
        self.clock = clock
        self._next = 0.0  # monotonic
        self._moved_since_vacuum = 0
        self._in_burst = False  # moved tasks since the last look at the indexes
        self._compaction: threading.Thread | None = None
        self.compactions = 0  # started by this object

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def compacting(self) -> bool:
        return self._compaction is not None and self._compaction.is_alive()

    async def step(self, db: Database, sql: Schema, holder: str) -> int | None:
        """One step if `holder` holds the lease (or takes it): how many tasks it moved;
        None when another process holds it."""
        self._next = time.monotonic() + self.every
        moved = await db.transaction(lambda conn: self._move(conn, sql, holder))
        if moved is None:
            return None
        self._moved_since_vacuum += moved
        burst_over = not moved and self._in_burst
        self._in_burst = bool(moved)
        # Every so many rows of a steady stream, or after a burst.
        if self._moved_since_vacuum >= VACUUM_AFTER or (burst_over and self._moved_since_vacuum):
            # Outside any transaction: VACUUM cannot run in one. Quick on a table of live
            # tasks; it frees the moved rows' space and index entries for new ones.
            await db.read(lambda conn: _vacuum(conn, sql))
            self._moved_since_vacuum = 0
        if burst_over and not self.compacting():
            await self._compact_if_bloated(db, sql, holder)
        return moved

    async def _move(self, conn: Any, sql: Schema, holder: str) -> int | None:
        now = time.time()
        if await conn.fetchval(sql(TAKE_LEASE), holder, now, now + self.lease) is None:
            return None
        rows = await conn.fetch(sql(MOVE), now, BATCH)
        if rows:
            await conn.execute(sql(DELETE_MOVED), [task_id for (task_id,) in rows])
        await conn.execute(sql(FORGET_KEYS), now - self.key_window)
        return len(rows)

    async def _compact_if_bloated(self, db: Database, sql: Schema, holder: str) -> None:
        async def look(conn: Any) -> list[tuple[str, bool]]:
            if conn.get_server_version().major < 12:  # no REINDEX CONCURRENTLY
                return []
            rows = await conn.fetch(sql(TO_COMPACT), INDEX_ROOM, ROW_ROOM, FEW_ROWS)
            if not rows:
                return []
            now = self.clock()
            if await conn.fetchval(sql(TAKE_COMPACTION), holder, now, now + COMPACT_EVERY) is None:
                return []  # one ran less than COMPACT_EVERY ago
            return [(name, valid) for name, valid in rows]

        indexes = await db.transaction(look)
        if indexes:
            self.compactions += 1
            self._compaction = threading.Thread(
                target=lambda: asyncio.run(compact(db, sql, indexes)),
                name="backbeat-compaction",
                daemon=True,  # a process that exits cuts it off: the next one cleans up
            )
            self._compaction.start()


async def _vacuum(conn: Any, sql: Schema) -> None:
    if conn.get_server_version().major < 12:
        await conn.execute(sql("VACUUM {s}.tasks"))
        return
    # A compaction running holds the lock VACUUM takes: skipped, not waited for.
    await conn.execute(sql("VACUUM (SKIP_LOCKED) {s}.tasks"))


async def compact(db: Database, sql: Schema, indexes: list[tuple[str, bool]]) -> None:
    """Drop the invalid leftovers of `indexes`, rebuild the valid ones, one at a time, then
    vacuum the hot table (the step's VACUUM skipped it meanwhile; this one waits its turn,
    and gives the heap's trailing pages back), on a connection of its own (REINDEX
    CONCURRENTLY runs in no transaction); log what it gave back and the time it took."""
    started = time.perf_counter()
    try:
        conn = await db.connect()
    except Exception as exc:
        logger.warning("backbeat: %s: cannot compact the hot table: %s", db.described, exc)
        return
    try:
        before = await conn.fetchval(sql(HOT_SIZE))
        for name, valid in indexes:
            verb = "REINDEX INDEX CONCURRENTLY" if valid else "DROP INDEX CONCURRENTLY IF EXISTS"
            await conn.execute(f"{verb} {name}", timeout=COMPACTION_TIMEOUT)
        await conn.execute(sql("VACUUM {s}.tasks"), timeout=COMPACTION_TIMEOUT)
        after = await conn.fetchval(sql(HOT_SIZE))
    except Exception as exc:
        logger.warning(
            "backbeat: %s: compacting the hot table failed, the next compaction cleans up "
            "after it: %s: %s",
            db.described,
            type(exc).__name__,
            exc,
        )
        return
    finally:
        with contextlib.suppress(Exception):  # lost already: nothing to close
            await conn.close(timeout=5)
    rebuilt = sum(valid for _, valid in indexes)
    logger.info(
        "backbeat: %s: hot table compacted from %.2f MB to %.2f MB in %.2fs (%d index(es) "
        "rebuilt, %d left over by a cut off rebuild dropped)",
        db.described,
        before / 1e6,
        after / 1e6,
        time.perf_counter() - started,
        rebuilt,
        len(indexes) - rebuilt,
    )
