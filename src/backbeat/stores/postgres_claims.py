"""The PostgreSQL store's claims, from start to end: taking tasks (`Store.claim`,
`Store.activate_and_claim`), renewing their leases, settling their outcomes and giving them
back, each in the caller's transaction.

A claim's receipt is its task's id and fencing ``token`` (`backbeat.stores.postgres_sql`):
every statement after the claim names both, so a worker whose claim was taken over, or
given back and claimed again (the same attempt number, another token), changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from backbeat.logs import log_dead_letters
from backbeat.status import TaskState
from backbeat.stores.base import (
    ClaimedTask,
    GatedShare,
    Settlement,
    lost_leases_error,
    receipt_for,
    split_receipt,
)
from backbeat.stores.postgres_gates import back_in_line, settled, take_gated
from backbeat.stores.postgres_sql import (
    ACTIVATE,
    CANCEL_ORPHANS,
    DEAD_LOST,
    LOCK_IN_ORDER,
    RELEASE,
    RENEW,
    SETTLE,
    SETTLE_ALIKE,
    SOONEST,
    START,
    Schema,
    claim_sql,
    quick_claim_sql,
)
from backbeat.stores.postgres_writes import notify


def claimed(row: Any) -> ClaimedTask:
    """A claimed row (`CLAIMED_COLUMNS`); its receipt is its id and fencing token."""
    *fields, token = row
    task = ClaimedTask(*fields)
    task.receipt = receipt_for(task.id, token)
    return task


def _receipts(receipts: list[str]) -> tuple[list[str], list[int]]:
    """Receipts as the two arrays the statements take: ids and tokens."""
    pairs = [split_receipt(receipt) for receipt in receipts]
    return [task_id for task_id, _ in pairs], [token for _, token in pairs]


async def quick_claim(
    conn: Any,
    sql: Schema,
    taking: tuple[float, float, str],
    limit: int,
    max_lost: int,
    alone_first: bool,
    queues: tuple[str, ...] | None,
) -> tuple[list[ClaimedTask], float | None, bool, bool]:
    """`Store.claim` of a store without gated lines, in one statement (`quick_claim_sql`):
    the tasks, when the next falls due, whether any line exists, whether chores wait."""
    only = () if queues is None else (list(queues),)
    query = sql(quick_claim_sql(queues is not None))
    rows = await conn.fetch(query, *taking, limit, max_lost, alone_first, *only)
    soonest, lines, chores = rows[0][-3:]
    return [claimed(row[:-3]) for row in rows if row[0] is not None], soonest, lines, chores


async def chores(conn: Any, sql: Schema, now: float, max_lost: int) -> bool:
    """What a claim settles first, each on rows no other claim holds: lost tasks cancelled
    (asked to be), dead-lettered (lost too often) or put back in their lines (gated).
    Whether any line exists."""
    lines = {line for (line,) in await conn.fetch(sql(CANCEL_ORPHANS), now) if line}
    dead = await conn.fetch(sql(DEAD_LOST), now, max_lost, lost_leases_error(max_lost))
    log_dead_letters([(task_id, name, error) for task_id, name, error, _ in dead])
    await settled(conn, sql, lines | {row[3] for row in dead if row[3]}, now)
    return await back_in_line(conn, sql, now)


async def claim(
    conn: Any,
    sql: Schema,
    shares: GatedShare,
    taking: tuple[float, float, str],
    limit: int,
    max_lost: int,
    alone_first: bool,
    queues: tuple[str, ...] | None,
) -> tuple[list[ClaimedTask], float | None, bool]:
    """`Store.claim` with its chores and gated lines (`taking`: now, lease end, worker); the
    tasks, when the next delayed task falls due or a gated line is to be looked at, and
    whether any line exists."""
    now = taking[0]
    only = () if queues is None else (list(queues),)
    any_line = await chores(conn, sql, now, max_lost)
    rows: list[Any] = []
    if alone_first:
        rows = await conn.fetch(sql(claim_sql(queues is not None, True)), *taking, limit, *only)
    if not rows:
        share = shares.next(limit)
        rows = await take_gated(conn, sql, taking, share, queues) if any_line else []
        gated = len(rows)
        if limit > gated:
            ungated = sql(claim_sql(queues is not None, False))
            rows += await conn.fetch(ungated, *taking, limit - gated, *only)
        if any_line and len(rows) < limit and gated == share:  # what the others left
            rows += await take_gated(conn, sql, taking, limit - len(rows), queues)
    return [claimed(row) for row in rows], await conn.fetchval(sql(SOONEST), now), any_line


async def activate(conn: Any, sql: Schema, ids: list[str], now: float) -> None:
    """Tasks written ahead made runnable; gated ones' lines looked at now."""
    rows = await conn.fetch(sql(ACTIVATE), ids)
    await settled(conn, sql, {line for (line,) in rows if line}, now)
    await notify(conn, sql, [sql.name])


async def activate_and_claim(
    conn: Any, sql: Schema, taking: tuple[float, float, str], ids: list[str], limit: int
) -> list[ClaimedTask]:
    """`Store.activate_and_claim`: activate these tasks, claiming at once those that can run now."""
    rows = await conn.fetch(sql(START), *taking, limit, ids)
    if len(rows) < len(ids):
        await activate(conn, sql, ids, taking[0])
    return [claimed(row) for row in rows]


async def renew(conn: Any, sql: Schema, receipts: list[str], lease: float) -> list[str]:
    """`Store.renew`: the ids of the claims to stop (lost, finished, or cancelled)."""
    ids, tokens = _receipts(receipts)
    rows = await conn.fetch(sql(RENEW), time.time() + lease, ids, tokens)
    kept = {task_id: cancelled for task_id, cancelled in rows}
    return [task_id for task_id in ids if kept.get(task_id, True)]


async def settle(conn: Any, sql: Schema, settlements: list[Settlement]) -> list[bool]:
    """`Store.finish`, in the caller's transaction: one statement per kind of outcome;
    whether each claim was current."""
    now = time.time()
    done: set[tuple[str, int]] = set()
    lines: set[str] = set()
    await conn.execute(sql(LOCK_IN_ORDER), [split_receipt(s.receipt)[0] for s in settlements])
    for state in {s.state for s in settlements}:
        rows = await conn.fetch(sql(SETTLE[state]), now, *_outcomes(settlements, state))
        done.update((task_id, token) for task_id, token, _ in rows)
        lines.update(line for _, _, line in rows if line is not None)
    await settled(conn, sql, lines, now)  # their gates may have a free slot
    return [split_receipt(s.receipt) in done for s in settlements]


async def settle_alike(conn: Any, sql: Schema, settlements: list[Settlement]) -> list[bool]:
    """`settle` of outcomes all of one kind, in one statement (`SETTLE_ALIKE`)."""
    state = settlements[0].state
    rows = await conn.fetch(sql(SETTLE_ALIKE[state]), time.time(), *_outcomes(settlements, state))
    done = {(task_id, token) for task_id, token, _ in rows}
    return [split_receipt(s.receipt) in done for s in settlements]


def _outcomes(settlements: list[Settlement], state: TaskState) -> list[list[Any]]:
    """The settling statements' arrays ($2 on) for the outcomes of one kind."""
    these = [s for s in settlements if s.state is state]
    ids, tokens = _receipts([s.receipt for s in these])
    return [
        ids,
        tokens,
        [s.result for s in these],
        [s.error for s in these],
        [s.traceback for s in these],
        [s.retry_at for s in these],
    ]


async def release(conn: Any, sql: Schema, receipts: list[str]) -> None:
    """`Store.release`: pending again, the attempt given back, the token kept."""
    rows = await conn.fetch(sql(RELEASE), *_receipts(receipts))
    await settled(conn, sql, {line for (line,) in rows if line}, time.time())
    if rows:
        await notify(conn, sql, [sql.name])


# `warm_up`: connections made ready, and the claims that get each past its custom plans.
WARM_CONNECTIONS = 2
WARM_CLAIMS = 6


async def warm_up(pool: Any, sql: Schema, queues: tuple[str, ...] | None, wait: float) -> None:
    """`Store.warm_up`: a few pooled connections opened, each with the claim and the usual
    outcome prepared and planned. A new connection's first claim took 14 ms here and its
    next five 2-3 ms (custom plans), then 0.5 ms; its first outcome 17 ms (the counting
    trigger compiled), then 1 ms. Claims of no task and outcomes of none: nothing changes."""
    claim = sql(quick_claim_sql(queues is not None))
    only = () if queues is None else (list(queues),)
    settle = sql(SETTLE_ALIKE[TaskState.SUCCEEDED])

    async def ready() -> None:  # at once for each: distinct connections
        async with pool.acquire(timeout=wait) as conn:
            for _ in range(WARM_CLAIMS):
                now = time.time()
                await conn.fetch(claim, now, now, "", 0, 1, False, *only)
            await conn.fetch(settle, time.time(), [], [], [], [], [], [])

    await asyncio.gather(*(ready() for _ in range(WARM_CONNECTIONS)))
