"""The SQL of the PostgreSQL store: its schema (versioned), and one statement per step of the
contract that is not about gates (`backbeat.stores.postgres_gates`) or reading
(`backbeat.stores.postgres_reads`).

Every table lives in the store's own schema, written ``{s}`` here and filled in by
`Schema` (so that a statement can also run on a connection whose ``search_path`` the app
owns). Times are seconds since the epoch (``double precision``), as in the other stores.

A claim's fence is ``token``: raised by every claim and start and by `take_over`, never
lowered, and named by the receipt. ``attempts`` only counts attempts (a `release` gives
one back); it fences nothing.
"""

from __future__ import annotations

import functools
import re

from backbeat.status import FINISHED, TaskState
from backbeat.stores.base import StoreError
from backbeat.stores.inspection import ATTEMPTS_KEPT
from backbeat.stores.postgres_maintenance import VERSION_3, VERSION_4

# Raised by each release whose schema needs more than `CREATE ... IF NOT EXISTS`: `open`
# runs the steps of `UPGRADES` from the version it finds up to this one.
SCHEMA_VERSION = 4

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_FINISHED = "(" + ", ".join(f"'{state}'" for state in FINISHED) + ")"
LIVE = "('held', 'pending', 'running')"


class Schema:
    """The store's schema name, and its statements with ``{s}`` filled in (each made once)."""

    def __init__(self, name: str) -> None:
        if not _NAME.match(name):
            raise StoreError(
                f"bad PostgreSQL schema name {name!r}: letters, digits and _, at most 51, "
                "not starting with a digit"
            )
        self.name = name
        self.quoted = f'"{name}"'
        self.channel = f"backbeat_{name}"  # LISTEN/NOTIFY (`backbeat.stores.postgres_listen`)
        self._made: dict[str, str] = {}

    def __call__(self, sql: str) -> str:
        made = self._made.get(sql)
        if made is None:
            made = self._made[sql] = sql.replace("{s}", self.quoted)
        return made


CREATE_VERSION_TABLE = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer NOT NULL,
    upgraded_at double precision NOT NULL
);
"""
# Taken before the schema is looked at, so that processes opening a new store at once
# create it once (CREATE ... IF NOT EXISTS races in PostgreSQL's catalogs).
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(hashtextextended('backbeat schema ' || $1, 0))"
READ_VERSION = "SELECT max(version) FROM {s}.schema_version"
WRITE_VERSION = "INSERT INTO {s}.schema_version (version, upgraded_at) VALUES ($1, $2)"

VERSION_1 = f"""
CREATE TABLE {{s}}.tasks (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    token bigint NOT NULL DEFAULT 0,
    retries integer NOT NULL DEFAULT 0,
    backoff double precision NOT NULL DEFAULT 1.0,
    max_backoff double precision NOT NULL DEFAULT 60.0,
    timeout double precision,
    created_at double precision NOT NULL,
    due_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    lease_until double precision,
    worker text,
    error text,
    traceback text,
    after text[],
    lost integer NOT NULL DEFAULT 0,
    result text,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress text,
    queue text NOT NULL DEFAULT 'default',
    priority integer NOT NULL DEFAULT 0,
    key text,
    rate_gate text,
    rate_limit integer NOT NULL DEFAULT 0,
    rate_window double precision NOT NULL DEFAULT 0,
    concurrency_gate text,
    max_concurrency integer NOT NULL DEFAULT 0,
    line text
);
-- Partial indexes: a task is in one only while it is in that state, so a task moving
-- pending -> running -> succeeded touches small indexes, not whole ones.
CREATE INDEX tasks_claim ON {{s}}.tasks (priority DESC, due_at)
    WHERE state = 'pending' AND line IS NULL;
CREATE INDEX tasks_pending ON {{s}}.tasks (due_at) WHERE state = 'pending';
CREATE INDEX tasks_held ON {{s}}.tasks (lease_until) WHERE state = 'held';
CREATE INDEX tasks_running ON {{s}}.tasks (lease_until) WHERE state = 'running';
CREATE INDEX tasks_running_workers ON {{s}}.tasks (worker) WHERE state = 'running';
CREATE INDEX tasks_finished ON {{s}}.tasks (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_failed ON {{s}}.tasks (id) WHERE state = 'failed';
CREATE INDEX tasks_cancelled ON {{s}}.tasks (id) WHERE state = 'cancelled';
-- Idempotency keys: one live task per key, whatever the number of writers (ON CONFLICT).
CREATE UNIQUE INDEX tasks_live_keys ON {{s}}.tasks (key)
    WHERE key IS NOT NULL AND state IN {LIVE};
CREATE INDEX tasks_line_order ON {{s}}.tasks (line, priority DESC, due_at, seq)
    WHERE line IS NOT NULL AND state IN ('pending', 'held');
CREATE INDEX tasks_gate_holders ON {{s}}.tasks (concurrency_gate)
    WHERE state = 'running' AND concurrency_gate IS NOT NULL;

CREATE TABLE {{s}}.lines (
    line text PRIMARY KEY,
    queue text NOT NULL,
    look_at double precision NOT NULL
);
CREATE INDEX lines_look ON {{s}}.lines (look_at);
CREATE TABLE {{s}}.gate_starts (gate text NOT NULL, at double precision NOT NULL);
CREATE INDEX gate_starts_at ON {{s}}.gate_starts (gate, at);
CREATE TABLE {{s}}.paused_queues (queue text PRIMARY KEY, paused_at double precision NOT NULL);
CREATE TABLE {{s}}.schedules (
    name text PRIMARY KEY,
    rule text NOT NULL,
    last_tick bigint,
    last_task text,
    note text,
    paused boolean NOT NULL DEFAULT false,
    updated_at double precision NOT NULL
);
CREATE TABLE {{s}}.workers (
    name text PRIMARY KEY,
    document text NOT NULL,
    expires_at double precision NOT NULL
);

-- The finished tasks per queue and state, so that `counts` reads no history: kept by the
-- triggers below in the statement that finishes, retries or deletes a task. Sixteen slots
-- per queue and state, each connection writing to its own (by its backend's pid), so that
-- workers finishing at once rarely wait for one another's row, and a transaction holds at
-- most one row per queue and state. (A slot by task id made two transactions finishing
-- many tasks each lock the same rows in different orders: deadlocks by the hundred, and
-- outcomes written seconds late, past their leases, with two workers.)
CREATE TABLE {{s}}.finished_counts (
    queue text NOT NULL,
    state text NOT NULL,
    slot integer NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (queue, state, slot)
);
CREATE FUNCTION {{s}}.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN {_FINISHED} THEN
        INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
        VALUES (NEW.queue, NEW.state, pg_backend_pid() & 15, 1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + 1;
    END IF;
    IF OLD.state IN {_FINISHED} THEN
        INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
        VALUES (OLD.queue, OLD.state, pg_backend_pid() & 15, -1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n - 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER count_finished AFTER UPDATE OF state ON {{s}}.tasks FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND (NEW.state IN {_FINISHED} OR OLD.state IN {_FINISHED}))
    EXECUTE FUNCTION {{s}}.count_finished();

-- The attempts that did not succeed (`Store.attempts`), written in the statement that ends
-- one: settled by its worker (retried, failed, cancelled; not given back: `release` counts
-- the attempt off), cancelled with its worker gone, or lost (`lost` raised by the claim
-- that takes it over, dead-letters it or puts it back in its line).
CREATE TABLE {{s}}.attempts (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text NOT NULL,
    number integer NOT NULL,
    worker text,
    started_at double precision,
    finished_at double precision NOT NULL,
    outcome text NOT NULL,
    error text,
    traceback text
);
CREATE INDEX attempts_task ON {{s}}.attempts (task_id, seq);
CREATE FUNCTION {{s}}.attempt_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lost boolean := NEW.lost > OLD.lost;
BEGIN
    INSERT INTO {{s}}.attempts
        (task_id, number, worker, started_at, finished_at, outcome, error, traceback)
    VALUES (
        OLD.id, OLD.attempts, OLD.worker, OLD.started_at,
        CASE WHEN lost THEN coalesce(OLD.lease_until, extract(epoch FROM clock_timestamp()))
             ELSE coalesce(NEW.finished_at, extract(epoch FROM clock_timestamp())) END,
        CASE WHEN lost THEN 'lost' WHEN NEW.state = 'pending' THEN 'retried'
             ELSE NEW.state END,
        CASE WHEN NOT lost OR NEW.state = 'failed' THEN NEW.error END,
        CASE WHEN NOT lost AND NEW.state <> 'cancelled' THEN NEW.traceback END);
    DELETE FROM {{s}}.attempts WHERE task_id = OLD.id AND seq <= (
        SELECT seq FROM {{s}}.attempts WHERE task_id = OLD.id
        ORDER BY seq DESC LIMIT 1 OFFSET {ATTEMPTS_KEPT});
    RETURN NULL;
END $$;
CREATE TRIGGER attempt_ended AFTER UPDATE ON {{s}}.tasks FOR EACH ROW
    WHEN (NEW.lost > OLD.lost
          OR (OLD.state = 'running' AND NEW.state IN ('pending', 'failed', 'cancelled')
              AND NEW.attempts = OLD.attempts AND NEW.lost = OLD.lost))
    EXECUTE FUNCTION {{s}}.attempt_ended();

-- Deleted tasks (`purge`, `delete`): their counts and attempts go, once per statement.
CREATE FUNCTION {{s}}.tasks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {{s}}.finished_counts AS c (queue, state, slot, n)
    SELECT queue, state, pg_backend_pid() & 15, -count(*) FROM gone
    WHERE state IN {_FINISHED} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + excluded.n;
    DELETE FROM {{s}}.attempts WHERE task_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_deleted AFTER DELETE ON {{s}}.tasks REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.tasks_deleted();
"""

# The hold of a task written ahead gets its own column: it was the task's `lease_until`.
VERSION_2 = """
ALTER TABLE {s}.tasks ADD COLUMN held_until double precision;
UPDATE {s}.tasks SET held_until = lease_until, lease_until = NULL WHERE state = 'held';
DROP INDEX {s}.tasks_held;
CREATE INDEX tasks_held ON {s}.tasks (held_until) WHERE state = 'held';
"""

# Each step brings a schema of the version before it up to its own.
UPGRADES = {1: VERSION_1, 2: VERSION_2, 3: VERSION_3, 4: VERSION_4}


# --- writing tasks ---------------------------------------------------------------------------

# One statement per write, whatever the number of tasks. A column whose value differs from
# task to task travels as an array, unnested in order (`seq` keeps that order for a line's
# tasks of equal priority and due time); one that all the tasks share, as one value: most
# columns of a batch are alike, and each array cost the client more than the server's
# insert (20 arrays: 6 µs a task to encode, measured). A task whose key a live task holds
# is skipped (ON CONFLICT): it never aborts the write.
INSERTED_COLUMNS = (
    ("id", "text"),
    ("name", "text"),
    ("payload", "text"),
    ("retries", "int"),
    ("backoff", "float8"),
    ("max_backoff", "float8"),
    ("timeout", "float8"),
    ("created_at", "float8"),
    ("due_at", "float8"),
    ("after", "text"),  # ids, by spaces
    ("held_until", "float8"),
    ("queue", "text"),
    ("priority", "int"),
    ("key", "text"),
    ("rate_gate", "text"),
    ("rate_limit", "int"),
    ("rate_window", "float8"),
    ("concurrency_gate", "text"),
    ("max_concurrency", "int"),
    ("line", "text"),
)


@functools.lru_cache(maxsize=64)
def insert_sql(arrays: tuple[bool, ...]) -> str:
    """The INSERT whose parameters ($1, $2 … in `INSERTED_COLUMNS`' order) are arrays where
    `arrays` says so (the first, ids, always is), single values elsewhere, and then the
    channel to notify; the ids inserted."""
    unnested: list[str] = []
    arguments: list[str] = []
    value: dict[str, str] = {}
    columns = zip(INSERTED_COLUMNS, arrays, strict=True)
    for number, ((name, kind), array) in enumerate(columns, start=1):
        if array:
            unnested.append(name)
            arguments.append(f"${number}::{kind}[]")
            value[name] = f"r.{name}"
        else:
            value[name] = f"${number}::{kind}"
    value["after"] = f"string_to_array({value['after']}, ' ')"
    channel = f"${len(INSERTED_COLUMNS) + 1}"
    return (
        f"WITH inserted AS (INSERT INTO {{s}}.tasks ({', '.join(value)}, state) "
        f"SELECT {', '.join(value.values())}, "
        f"CASE WHEN {value['held_until']} IS NULL THEN 'pending' ELSE 'held' END "
        f"FROM unnest({', '.join(arguments)}) WITH ORDINALITY AS r({', '.join(unnested)}, n) "
        f"ORDER BY n ON CONFLICT (key) WHERE key IS NOT NULL AND state IN {LIVE} DO NOTHING "
        "RETURNING id, queue, state) "
        # Wakes the waiting workers of every process at commit (`postgres_listen`): once per
        # queue of the tasks written runnable.
        f"SELECT id FROM inserted WHERE (SELECT count(pg_notify({channel}::text, queue)) FROM "
        "(SELECT DISTINCT queue FROM inserted WHERE state = 'pending') q) >= 0"
    )


LIVE_WITH_KEYS = f"SELECT key, id FROM {{s}}.tasks WHERE key = ANY($1::text[]) AND state IN {LIVE}"
# Wakes the other processes' waiting workers (`postgres_listen`): once per queue, from the
# write itself, at its commit.
NOTIFY = "SELECT pg_notify($1, queue) FROM unnest($2::text[]) AS queue"

# A task not yet due, written, retried or run now, in a gated line: the line is looked at
# from its due time.
OPEN_LINES = """
INSERT INTO {s}.lines AS l (line, queue, look_at)
SELECT line, min(queue), min(look_at)
FROM unnest($1::text[], $2::text[], $3::float8[]) AS r(line, queue, look_at) GROUP BY line
ON CONFLICT (line) DO UPDATE SET look_at = least(l.look_at, excluded.look_at)
"""

ACTIVATE = (
    "UPDATE {s}.tasks SET state = 'pending', held_until = NULL "
    "WHERE id = ANY($1::text[]) AND state = 'held' RETURNING line"
)

# --- claims -------------------------------------------------------------------------------

# Runnable now: due, and every task it comes after finished (or purged).
RUNNABLE = (
    "t.due_at <= $1 AND (t.after IS NULL OR NOT EXISTS ("
    f"SELECT 1 FROM {{s}}.tasks p WHERE p.id = ANY(t.after) AND p.state IN {LIVE}))"
)
NOT_PAUSED = " AND t.queue NOT IN (SELECT queue FROM {s}.paused_queues)"
CLAIMED_COLUMNS = (
    "id, name, payload, attempts, created_at, retries, backoff, max_backoff, timeout, lost, "
    "error, queue, token"
)
_TAKE = (
    "UPDATE {s}.tasks t SET state = 'running', attempts = t.attempts + 1, "
    "token = t.token + 1, started_at = $1, lease_until = $2, held_until = NULL, worker = $3, "
    "lost = t.lost + (t.state = 'running')::int "
)
# Each kind of candidate is locked on its own index (SKIP LOCKED: claims never wait for one
# another), the best `limit` of them taken: priority, then due time. A running task whose
# lease expired was lost by its worker (it died or hung): a first loss is taken over like
# any task (counted in `lost`); a task lost more often only by an idle worker, alone.
_PENDING = """pending AS (SELECT id, priority, due_at FROM {s}.tasks t
    WHERE state = 'pending' AND line IS NULL AND {runnable}{only}
    ORDER BY priority DESC, due_at LIMIT $4 FOR UPDATE SKIP LOCKED),
held AS (SELECT id, priority, due_at FROM {s}.tasks t
    WHERE state = 'held' AND held_until < $1 AND line IS NULL AND {runnable}{only}
    ORDER BY priority DESC, due_at LIMIT $4 FOR UPDATE SKIP LOCKED),"""
_CANDIDATES = (
    _PENDING
    + """
expired AS (SELECT id, priority, due_at FROM {s}.tasks t
    WHERE state = 'running' AND lease_until < $1 AND lost = 0 AND line IS NULL{only}
    ORDER BY priority DESC, due_at LIMIT $4 FOR UPDATE SKIP LOCKED),
chosen AS (SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM held
    UNION ALL SELECT * FROM expired) c ORDER BY priority DESC, due_at LIMIT $4)
"""
)
_ALONE = """
chosen AS (SELECT id FROM {s}.tasks t WHERE state = 'running' AND lease_until < $1
    AND lost >= 1 AND line IS NULL{only} ORDER BY lease_until LIMIT least($4, 1)
    FOR UPDATE SKIP LOCKED)
"""
_CLAIM = (
    "WITH {candidates}, claimed AS (" + _TAKE + "FROM chosen WHERE t.id = chosen.id RETURNING t.*) "
    f"SELECT {CLAIMED_COLUMNS} FROM claimed ORDER BY priority DESC, due_at, seq"
)


def claim_sql(only_queues: bool, alone: bool) -> str:
    """The claim ($1 now, $2 lease end, $3 worker, $4 limit; $5 the queues, if given)."""
    only = NOT_PAUSED + (" AND t.queue = ANY($5::text[])" if only_queues else "")
    candidates = (_ALONE if alone else _CANDIDATES).replace("{runnable}", RUNNABLE)
    return _CLAIM.replace("{candidates}", candidates.replace("{only}", only).strip())


# The claim of a store without gated lines, in one statement outside any transaction: a
# claim's round trips were most of its cost (a no-op task's whole run took ten). It leaves
# to the chores of `claim_sql`'s path what it does not do (a lost task to dead-letter or to
# cancel, a gated one to put back in its line) and says whether there are any, whether
# any line exists (then claims take the other path), and when the next task falls due.
# An idle worker (``$6``) takes a task lost before alone, if there is one, instead.
# ($1 now, $2 lease end, $3 worker, $4 limit, $5 max lost, $6 alone first; $7 the queues.)
_QUICK_CANDIDATES = (
    """alone AS (SELECT id FROM {s}.tasks t WHERE $6 AND state = 'running' AND lease_until < $1
    AND lost >= 1 AND lost + 1 < $5 AND NOT cancel_requested AND line IS NULL{only}
    ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED),
"""
    + _PENDING
    + """
expired AS (SELECT id, priority, due_at FROM {s}.tasks t
    WHERE state = 'running' AND lease_until < $1 AND lost = 0 AND $5 > 1
    AND NOT cancel_requested AND line IS NULL{only}
    ORDER BY priority DESC, due_at LIMIT $4 FOR UPDATE SKIP LOCKED),
chosen AS (SELECT id FROM alone UNION ALL (SELECT id FROM (SELECT * FROM pending
    UNION ALL SELECT * FROM held UNION ALL SELECT * FROM expired) c
    WHERE NOT EXISTS (SELECT FROM alone) ORDER BY priority DESC, due_at LIMIT $4))"""
)
# What the chores settle (`CANCEL_ORPHANS`, `DEAD_LOST`, `back_in_line`'s).
_CHORES = (
    "EXISTS (SELECT FROM {s}.tasks WHERE state = 'running' AND lease_until < $1 "
    "AND (cancel_requested OR lost + 1 >= $5 OR line IS NOT NULL))"
)
_QUICK_CLAIM = (
    "WITH {candidates}, claimed AS (" + _TAKE + "FROM chosen WHERE t.id = chosen.id RETURNING t.*) "
    "SELECT {columns}, s.soonest, s.lines, s.chores FROM (SELECT ({soonest}) AS soonest, "
    "EXISTS (SELECT FROM {s}.lines) AS lines, " + _CHORES + " AS chores) s "
    "LEFT JOIN claimed c ON true ORDER BY c.priority DESC, c.due_at, c.seq"
)


def quick_claim_sql(only_queues: bool) -> str:
    """The claim in one statement (above); each row a claimed task's columns (all NULL when
    none was claimed) and the soonest due time, whether lines exist, whether chores wait."""
    only = NOT_PAUSED + (" AND t.queue = ANY($7::text[])" if only_queues else "")
    candidates = _QUICK_CANDIDATES.replace("{runnable}", RUNNABLE).replace("{only}", only)
    columns = ", ".join(f"c.{name.strip()}" for name in CLAIMED_COLUMNS.split(","))
    return (
        _QUICK_CLAIM.replace("{candidates}", candidates)
        .replace("{columns}", columns)
        .replace("{soonest}", SOONEST.removeprefix("SELECT "))
    )


# Start tasks by id ($4), and only them (`take_gated`, and `activate_and_claim`'s writer).
TAKE = _TAKE + f"WHERE t.id = ANY($4::text[]) RETURNING {CLAIMED_COLUMNS}"
START = (
    "WITH chosen (pick) AS (SELECT id FROM {s}.tasks t WHERE t.id = ANY($5::text[]) "
    "AND state = 'held' AND after IS NULL AND due_at <= $1 AND line IS NULL"
    + NOT_PAUSED
    + " LIMIT $4 FOR UPDATE SKIP LOCKED) "
    + _TAKE
    + f"FROM chosen WHERE t.id = chosen.pick RETURNING {CLAIMED_COLUMNS}"
)

# What a claim settles first, each on rows no other claim holds.
CANCEL_ORPHANS = (
    "UPDATE {s}.tasks SET state = 'cancelled', finished_at = $1, lease_until = NULL "
    "WHERE id IN (SELECT id FROM {s}.tasks WHERE state = 'running' AND lease_until < $1 "
    "AND cancel_requested FOR UPDATE SKIP LOCKED) RETURNING line"
)
DEAD_LOST = (
    "UPDATE {s}.tasks SET state = 'failed', finished_at = $1, lease_until = NULL, "
    "lost = lost + 1, error = $3 "
    "WHERE id IN (SELECT id FROM {s}.tasks WHERE state = 'running' AND lease_until < $1 "
    "AND lost + 1 >= $2 FOR UPDATE SKIP LOCKED) RETURNING id, name, error, line"
)
# When the next delayed or retried task falls due (`Store.wait`), or a gated line is to be
# looked at.
SOONEST = (
    "SELECT least((SELECT min(due_at) FROM {s}.tasks WHERE state = 'pending' AND due_at > $1), "
    "(SELECT min(look_at) FROM {s}.lines WHERE look_at > $1 "
    "AND queue NOT IN (SELECT queue FROM {s}.paused_queues)))"
)

# --- the claim's later steps --------------------------------------------------------------

# Receipts as two arrays ($2 ids, $3 tokens): a claim is current while its task runs
# under that very token.
# Renewals, outcomes and releases of many tasks lock their rows in id order first: a
# worker renews the very tasks whose outcomes it is writing on another connection, and in
# the join's order two such statements deadlocked (PostgreSQL then aborts one a second
# later: outcomes written past their leases, tasks run twice).
_IN_ORDER = (
    "WITH locked AS (SELECT id FROM {{s}}.tasks WHERE id = ANY(${ids}::text[]) "
    "ORDER BY id FOR UPDATE) "
)
# `finish` takes its rows so before its statements (one per outcome).
LOCK_IN_ORDER = "SELECT 1 FROM {s}.tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_RECEIPTS = (
    "FROM unnest($2::text[], $3::bigint[]) AS r(id, token), locked l "
    "WHERE t.id = r.id AND l.id = r.id AND t.token = r.token AND t.state = 'running'"
)
RENEW = (
    _IN_ORDER.format(ids=2)
    + "UPDATE {s}.tasks t SET lease_until = $1 "
    + _RECEIPTS
    + " RETURNING t.id, t.cancel_requested"
)
RELEASE = (
    _IN_ORDER.format(ids=1)
    + "UPDATE {s}.tasks t SET state = 'pending', attempts = greatest(t.attempts - 1, 0), "
    "lease_until = NULL, worker = NULL FROM unnest($1::text[], $2::bigint[]) AS r(id, token), "
    "locked l WHERE t.id = r.id AND l.id = r.id AND t.token = r.token "
    "AND t.state = 'running' AND NOT t.cancel_requested RETURNING t.line"
)
# Any state: the last report of an attempt may land after its outcome.
PROGRESS = "UPDATE {s}.tasks SET progress = $1 WHERE id = $2 AND token = $3"

_OUTCOMES = (
    "FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::float8[]) "
    "AS r(id, token, result, error, traceback, retry_at){locked} "
    "WHERE t.id = r.id{locked_id} AND t.token = r.token AND t.state = 'running' "
    "RETURNING t.id, t.token, t.line"
)
_SET_OUTCOME = {
    TaskState.SUCCEEDED: (
        "UPDATE {s}.tasks t SET state = 'succeeded', finished_at = $1, lease_until = NULL, "
        "result = r.result "
    ),
    TaskState.SCHEDULED: (
        "UPDATE {s}.tasks t SET state = 'pending', due_at = coalesce(r.retry_at, $1), "
        "lease_until = NULL, worker = NULL, error = r.error, traceback = r.traceback "
    ),
    TaskState.FAILED: (
        "UPDATE {s}.tasks t SET state = 'failed', finished_at = $1, lease_until = NULL, "
        "error = r.error, traceback = r.traceback "
    ),
    TaskState.CANCELLED: (
        "UPDATE {s}.tasks t SET state = 'cancelled', finished_at = $1, lease_until = NULL, "
        "error = coalesce(r.error, t.error) "
    ),
}
# One statement per kind of outcome, in `finish`'s transaction (its rows locked first).
SETTLE = {
    state: update + _OUTCOMES.format(locked="", locked_id="")
    for state, update in _SET_OUTCOME.items()
}
# Outcomes all of one kind (a busy worker's usual batch) in one statement outside any
# transaction: the rows locked in id order first (as `LOCK_IN_ORDER`), their gated lines
# looked at now (as `settled`).
SETTLE_ALIKE = {
    state: _IN_ORDER.format(ids=2)
    + ", done AS ("
    + update
    + _OUTCOMES.format(locked=", locked l", locked_id=" AND l.id = r.id")
    + "), look AS (UPDATE {s}.lines SET look_at = least(look_at, $1) "
    "WHERE line IN (SELECT line FROM done WHERE line IS NOT NULL)) "
    "SELECT id, token, line FROM done"
    for state, update in _SET_OUTCOME.items()
}

CANCEL_WAITING = (
    "UPDATE {s}.tasks SET state = 'cancelled', finished_at = $1, error = $2, "
    "held_until = NULL WHERE id = ANY($3::text[]) AND state IN ('held', 'pending')"
)
# A running task is cancelled by its worker, told at its next renewal.
CANCEL_RUNNING = (
    "UPDATE {s}.tasks SET cancel_requested = true, error = $1 "
    "WHERE id = ANY($2::text[]) AND state = 'running'"
)
# Back to pending; a key another live task took meanwhile is left to that task.
REQUEUE = (
    "UPDATE {s}.tasks t SET state = 'pending', attempts = 0, lost = 0, due_at = $1, "
    "finished_at = NULL, started_at = NULL, worker = NULL, key = CASE WHEN EXISTS ("
    f"SELECT 1 FROM {{s}}.tasks o WHERE o.key = t.key AND o.state IN {LIVE}) THEN NULL "
    "ELSE t.key END WHERE t.state = 'failed' AND ($2::text[] IS NULL OR t.id = ANY($2::text[])) "
    "RETURNING t.line, t.queue, t.due_at"
)

# Run on both tables: the hot one (finished since the last upkeep step) and `finished`.
PURGE_WHERE = "FROM {table} WHERE state = ANY($1::text[]) AND finished_at < $2"
FORGET_OLD_STARTS = "DELETE FROM {s}.gate_starts WHERE at < $1"

# --- workers ------------------------------------------------------------------------------

BEAT = (
    "INSERT INTO {s}.workers (name, document, expires_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO UPDATE SET document = excluded.document, "
    "expires_at = excluded.expires_at"
)
FORGET_WORKER = "DELETE FROM {s}.workers WHERE name = $1"
FORGET_LONG_GONE = "DELETE FROM {s}.workers WHERE expires_at < $1"
WORKERS = "SELECT document, expires_at FROM {s}.workers WHERE expires_at > $1 ORDER BY name"
# A dead worker's tasks: their leases run out now (the next claim counts them as lost), and
# their fence moves on, so an outcome the dead worker still sends is refused at once.
TAKE_OVER = (
    "UPDATE {s}.tasks SET lease_until = $1, token = token + 1 "
    "WHERE state = 'running' AND worker = $2 AND lease_until > $1 RETURNING id"
)

# --- the dashboard's acts -------------------------------------------------------------------

# Due now, as if the wait were over.
RUN_NOW = (
    "UPDATE {s}.tasks SET due_at = least(due_at, $1) "
    "WHERE id = ANY($2::text[]) AND state = 'pending' RETURNING line, queue, due_at"
)
DELETE = f"DELETE FROM {{table}} WHERE id = ANY($1::text[]) AND state IN {_FINISHED}"
# A paused queue is a row: the claims leave its tasks out (`NOT_PAUSED`), for every process
# and across restarts, and a queue with no task yet can be paused ahead.
PAUSE_QUEUE = (
    "INSERT INTO {s}.paused_queues (queue, paused_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
)
RESUME_QUEUE = "DELETE FROM {s}.paused_queues WHERE queue = $1"
# A resumed queue's lines are looked at now (their gates were not looked at meanwhile).
LOOK_AT_QUEUE = "UPDATE {s}.lines SET look_at = least(look_at, $1) WHERE queue = $2"
PAUSED = "SELECT queue FROM {s}.paused_queues ORDER BY queue"
