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
at). The table's heap and indexes then reuse their space: their size stays near what the
live tasks need, whatever the number that ran through (bench/postgres/size.py).
"""

from __future__ import annotations

import logging
import time
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

# The lease ($1 holder, $2 now, $3 until): taken when free or run out, kept by its holder.
TAKE_LEASE = """
INSERT INTO {s}.upkeep AS u (name, holder, until) VALUES ('upkeep', $1, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE u.holder = excluded.holder OR u.until < $2
RETURNING holder
"""
# A worker that stops gives the lease up: another takes it at its next heartbeat.
GIVE_UP_LEASE = "DELETE FROM {s}.upkeep WHERE holder = $1"
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


async def bring_back(conn: Any, sql: Schema, ids: list[str] | None) -> None:
    """Failed tasks (these, or all) moved back to the hot table, to be retried there."""
    back = [task_id for (task_id,) in await conn.fetch(sql(BRING_BACK), ids)]
    if back:
        await conn.execute(sql(DELETE_BROUGHT_BACK), back)


class Upkeep:
    """One store object's share of the upkeep: when it next tries, and what it moved."""

    def __init__(self, *, every: float = 1.0, lease: float = 30.0, key_window: float = 0.0):
        self.every = every
        self.lease = lease
        self.key_window = key_window
        self._next = 0.0  # monotonic
        self._moved_since_vacuum = 0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    async def step(self, db: Database, sql: Schema, holder: str) -> int | None:
        """One step if `holder` holds the lease (or takes it): how many tasks it moved;
        None when another process holds it."""
        self._next = time.monotonic() + self.every
        moved = await db.transaction(lambda conn: self._move(conn, sql, holder))
        if moved is None:
            return None
        self._moved_since_vacuum += moved
        # Every so many rows of a steady stream, or after a burst.
        if self._moved_since_vacuum >= VACUUM_AFTER or (not moved and self._moved_since_vacuum):
            # Outside any transaction: VACUUM cannot run in one. Quick on a table of live
            # tasks; it frees the moved rows' space and index entries for new ones.
            await db.read(lambda conn: conn.execute(sql("VACUUM {s}.tasks")))
            self._moved_since_vacuum = 0
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
