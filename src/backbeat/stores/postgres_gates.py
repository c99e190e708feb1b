"""The PostgreSQL store's gates (`Store.claim`): rate limits and per-key concurrency.

The design is the SQLite store's (`backbeat.stores.sqlite_gates`): a gated task waits in
its line (one per queue and pair of gates), ``lines`` says when to look at each line next,
``gate_starts`` keeps a rate gate's start times for one window, and a concurrency gate
counts its running tasks. What differs is that claims here run at once in many processes:

* a claim locks the lines it serves (``FOR UPDATE SKIP LOCKED``: another claim serves the
  others meanwhile, nobody waits);
* two lines may share a gate (one concurrency key, two queues), so before counting a gate
  a claim takes a transaction-level advisory lock on its name, trying only: a gate another
  claim is counting is left to it, and its line is looked at by the next claim;
* everything is on this host's clock, in the claim's transaction.
"""

from __future__ import annotations

from typing import Any

from backbeat.stores.postgres_sql import RUNNABLE, TAKE, Schema

# How long a line whose concurrency gate is full, or whose tasks wait for earlier ones, is
# left alone (a safety net: a settling task of the line sets it back to now at once).
RECHECK = 1.0

# The due lines of the queues not paused, locked for this claim.
_LINES = (
    "SELECT line, queue FROM {s}.lines WHERE look_at <= $1 "
    "AND queue NOT IN (SELECT queue FROM {s}.paused_queues) "
    "ORDER BY look_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_ANY_LINE = "SELECT EXISTS (SELECT 1 FROM {s}.lines)"
# A gated task whose lease ran out (its worker died or hung, or was taken over) waits in its
# line again, first by its order: counted as lost, as a task claimed again is.
_BACK_IN_LINE = (
    "UPDATE {s}.tasks SET state = 'pending', lost = lost + 1, lease_until = NULL, worker = NULL "
    "WHERE id IN (SELECT id FROM {s}.tasks WHERE state = 'running' AND lease_until < $1 "
    "AND line IS NOT NULL FOR UPDATE SKIP LOCKED) RETURNING line"
)
_HEADS = (
    "SELECT id, rate_gate, rate_limit, rate_window, concurrency_gate, max_concurrency "
    "FROM {s}.tasks t WHERE line = $2 AND state IN ('pending', 'held') "
    "AND (state = 'pending' OR held_until < $1) AND "
    + RUNNABLE
    + " ORDER BY priority DESC, due_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED"
)
_TRY_GATE = "SELECT pg_try_advisory_xact_lock(hashtextextended('backbeat gate ' || $1, 0))"
_SOONEST_IN_LINE = (
    "SELECT min(due_at) FROM {s}.tasks WHERE line = $1 AND state IN ('pending', 'held') "
    "AND due_at > $2"
)
_LIVE_IN_LINE = (
    "SELECT EXISTS (SELECT 1 FROM {s}.tasks WHERE line = $1 "
    "AND state IN ('held', 'pending', 'running'))"
)
_FORGET_STARTS = "DELETE FROM {s}.gate_starts WHERE gate = $1 AND at <= $2"
_STARTS = "SELECT count(*), min(at) FROM {s}.gate_starts WHERE gate = $1 AND at > $2"
_STARTED = "INSERT INTO {s}.gate_starts (gate, at) SELECT $1, $2 FROM generate_series(1, $3)"
_HOLDERS = "SELECT count(*) FROM {s}.tasks WHERE concurrency_gate = $1 AND state = 'running'"
_LOOK_AT = "UPDATE {s}.lines SET look_at = $1 WHERE line = $2"
_FORGET_LINE = "DELETE FROM {s}.lines WHERE line = $1"
LOOK_NOW = "UPDATE {s}.lines SET look_at = least(look_at, $1) WHERE line = ANY($2::text[])"


async def back_in_line(conn: Any, sql: Schema, now: float) -> bool:
    """Gated tasks whose leases ran out wait in their lines again; whether any line exists
    (nothing to do when none does)."""
    if not await conn.fetchval(sql(_ANY_LINE)):
        return False
    back = {line for (line,) in await conn.fetch(sql(_BACK_IN_LINE), now)}
    await settled(conn, sql, back, now)
    return True


async def take_gated(
    conn: Any,
    sql: Schema,
    taking: tuple[float, float, str],
    limit: int,
    queues: tuple[str, ...] | None,
) -> list[Any]:
    """Start the first tasks of the lines whose gates are open, up to `limit` (`taking`:
    now, lease end, worker); the rows, as `TAKE` returns them."""
    now = taking[0]
    taken: list[Any] = []
    for line, queue in await conn.fetch(sql(_LINES), now, limit + 32):
        if len(taken) >= limit:
            break
        if queues is not None and queue not in queues:
            continue
        heads = await conn.fetch(sql(_HEADS), now, line, limit - len(taken))
        if not heads:
            await _nothing_to_start(conn, sql, line, now)
            continue
        head = heads[0]
        gates = [gate for gate in (head[1], head[4]) if gate is not None]
        if not all([await conn.fetchval(_TRY_GATE, gate) for gate in gates]):
            continue  # another claim counts this gate now: the next claim looks again
        room, look_next = await _room(conn, sql, head, now, limit - len(taken))
        ids = [row[0] for row in heads[:room]]
        if ids:
            order = {task_id: n for n, task_id in enumerate(ids)}
            started = await conn.fetch(sql(TAKE), *taking, ids)
            taken.extend(sorted(started, key=lambda row: order[row[0]]))
            if head[1] is not None:
                await conn.execute(sql(_STARTED), head[1], now, len(ids))
        # Served lines go to the back (the others come first next time), closed ones wait
        # for their gate.
        await conn.execute(sql(_LOOK_AT), look_next, line)
    return taken


async def _room(conn: Any, sql: Schema, head: Any, now: float, room: int) -> tuple[int, float]:
    """How many of a line may start now (its head's gates), and when to look at it next."""
    _, rate_gate, rate_limit, rate_window, concurrency_gate, max_concurrency = head
    look_next = now
    if rate_gate is not None:
        await conn.execute(sql(_FORGET_STARTS), rate_gate, now - rate_window)
        count, oldest = await conn.fetchrow(sql(_STARTS), rate_gate, now - rate_window)
        room = min(room, rate_limit - count)
        if count + max(room, 0) >= rate_limit:  # closed once these start: open again then
            look_next = max(look_next, (oldest if count else now) + rate_window)
    if concurrency_gate is not None:
        held = await conn.fetchval(sql(_HOLDERS), concurrency_gate)
        room = min(room, max_concurrency - held)
        if held + max(room, 0) >= max_concurrency:
            look_next = max(look_next, now + RECHECK)
    return max(room, 0), look_next


async def _nothing_to_start(conn: Any, sql: Schema, line: str, now: float) -> None:
    """A line with nothing runnable now: gone if it has no live task, else looked at when
    its soonest task is due (or a little later: it waits for an earlier task)."""
    if not await conn.fetchval(sql(_LIVE_IN_LINE), line):
        await conn.execute(sql(_FORGET_LINE), line)
        return
    due = await conn.fetchval(sql(_SOONEST_IN_LINE), line, now)
    look_at = now + RECHECK if due is None else min(due, now + RECHECK)
    await conn.execute(sql(_LOOK_AT), look_at, line)


async def settled(conn: Any, sql: Schema, lines: set[str], now: float) -> None:
    """Tasks of these lines settled, were released or given back: a slot may be free."""
    if lines:
        await conn.execute(sql(LOOK_NOW), now, sorted(lines))
