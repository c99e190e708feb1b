"""The SQLite store's paused queues and the usage of its limits (`Store.pause_queue`,
`Store.gate_usage`).

A paused queue is a row of ``backbeat_paused_queues``; the claim and start statements leave
its tasks out (`NOT_PAUSED`, a subquery of a table that is almost always empty: SQLite
reads it once per statement), and so do the gated lines (`backbeat.stores.sqlite_gates`).
Kept in the file, so a pause holds for every process on it and across restarts, and a queue
with no task yet can be paused ahead.
"""

from __future__ import annotations

import sqlite3
import time

from backbeat.stores.gate_usage import busiest, window_of
from backbeat.stores.inspection import GateUsage

QUEUES_SCHEMA = """
CREATE TABLE IF NOT EXISTS backbeat_paused_queues (
    queue TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);
"""

# Appended to a claim's conditions on `backbeat_tasks` (its column `queue`).
NOT_PAUSED = " AND queue NOT IN (SELECT queue FROM backbeat_paused_queues)"

PAUSE = "INSERT OR IGNORE INTO backbeat_paused_queues (queue, paused_at) VALUES (?, ?)"
RESUME = "DELETE FROM backbeat_paused_queues WHERE queue = ?"
# A resumed queue's lines are looked at now (their gates were not looked at meanwhile).
LOOK_AT_QUEUE = "UPDATE backbeat_lines SET look_at = min(look_at, ?) WHERE queue = ?"
_PAUSED = "SELECT queue FROM backbeat_paused_queues ORDER BY queue"

# Each rate gate that started a task in the longest window, and its latest start: only those
# whose latest start is inside their own window are counted (`STARTS_SINCE`).
RATE_GATES = "SELECT gate, max(at) FROM backbeat_gate_starts WHERE at > ? GROUP BY gate"
STARTS_SINCE = "SELECT count(*) FROM backbeat_gate_starts WHERE gate = ? AND at > ?"
HOLDERS = (
    "SELECT concurrency_gate, count(*) FROM backbeat_tasks WHERE state = 'running' "
    "AND concurrency_gate IS NOT NULL GROUP BY concurrency_gate"
)
WAITING = (
    "SELECT rate_gate, concurrency_gate, count(*) FROM backbeat_tasks "
    "WHERE line IS NOT NULL AND state IN ('pending', 'held') GROUP BY line"
)


def pause(conn: sqlite3.Connection, queue: str, paused: bool) -> None:
    now = time.time()
    if paused:
        conn.execute(PAUSE, (queue, now))
    else:
        conn.execute(RESUME, (queue,))
        conn.execute(LOOK_AT_QUEUE, (now, queue))


def paused_queues(conn: sqlite3.Connection) -> list[str]:
    return [queue for (queue,) in conn.execute(_PAUSED).fetchall()]


def gate_usage(conn: sqlite3.Connection, longest_window: float) -> list[GateUsage]:
    """Read in one transaction: starts per rate gate in its window, running tasks per
    concurrency gate, waiting tasks per line (both of its gates)."""
    now = time.time()
    used: dict[str, int] = {}
    for gate, latest in conn.execute(RATE_GATES, (now - longest_window,)).fetchall():
        window = window_of(gate)
        if window is not None and latest > now - window:
            used[gate] = conn.execute(STARTS_SINCE, (gate, now - window)).fetchone()[0]
    for gate, count in conn.execute(HOLDERS).fetchall():
        used[gate] = count
    waiting: dict[str, int] = {}
    for rate_gate, concurrency_gate, count in conn.execute(WAITING).fetchall():
        for gate in (rate_gate, concurrency_gate):
            if gate is not None:
                waiting[gate] = waiting.get(gate, 0) + count
    return busiest(used, waiting)
