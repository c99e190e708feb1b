"""The embedded store: one SQLite file (stdlib `sqlite3`), shared by processes on one host.

The file itself — connections, the writer thread and its group commit, the
checks that keep a deleted, corrupt or full file from swallowing tasks — is
`backbeat.stores.sqlite_file`. This module is the store contract in SQL:

* enqueues made in one turn of the event loop become one statement;
* a claim is one ``UPDATE … RETURNING`` that takes runnable tasks and sets
  their lease in the same statement, so two workers never hold one task;
  expired leases are counted (`lost`), and a task lost too often is
  dead-lettered in the same transaction;
* a sequence's order is a JSON list of ids (``after``) checked with ``json_each``.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from backbeat.batching import TurnGroup
from backbeat.gates import LONGEST_WINDOW
from backbeat.logs import log_dead_letters
from backbeat.status import FINISHED, STATES
from backbeat.stores import sqlite_attempts, sqlite_queues, sqlite_search
from backbeat.stores.base import (
    ClaimedTask,
    GatedShare,
    NewTask,
    ScheduleRecord,
    Settlement,
    StoredStatus,
    StoreError,
    WorkerInfo,
    after_ids,
    check_purgeable,
    lost_leases_error,
    receipt_for,
    split_receipt,
)
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage
from backbeat.stores.searching import check_scan, check_search
from backbeat.stores.sqlite_counts import COUNTS, QUEUES
from backbeat.stores.sqlite_file import SQLiteFile, path_from_url
from backbeat.stores.sqlite_gates import (
    FORGET_OLD_STARTS,
    OPEN_LINE,
    SOONEST_OR_LINE,
    settled,
    take_gated,
)
from backbeat.stores.sqlite_schedules import DECLARE, PAUSE, SELECT_ALL, fire, record
from backbeat.stores.sqlite_sql import (
    ACTIVATE,
    BEAT,
    CANCEL_ORPHANS,
    CANCEL_RUNNING,
    CANCEL_WAITING,
    CLAIMED_COLUMNS,
    CORRUPT_AFTER,
    CURRENT,
    DEAD_LOST,
    PROGRESS,
    RELEASE,
    REQUEUE,
    REQUEUED,
    RUNNABLE,
    SETTLE,
    SOONEST,
    START,
    STATUS_COLUMNS,
    TAKE_OVER,
    WORKERS,
    claim_sql,
    insert_groups,
    insert_row,
    list_query,
    setup,
)
from backbeat.stores.states import shown_state
from backbeat.stores.wakeups import DueHint, Wakeups

T = TypeVar("T")

logger = logging.getLogger("backbeat")

# One signal per file for every store object on it in this process (`Store.wait`).
_WAKEUPS: dict[Path, Wakeups] = {}


def _activate(conn: sqlite3.Connection, ids: str, now: float) -> None:
    """Written-ahead tasks (a JSON list of ids) made runnable; gated ones' lines looked at now."""
    lines = {line for (line,) in conn.execute(ACTIVATE, {"ids": ids}).fetchall() if line}
    if lines:
        settled(conn, lines, now)


def _claimed(row: Any) -> ClaimedTask:
    """A claimed row; its receipt is id and attempt number (the fencing token)."""
    claimed = ClaimedTask(*row)
    claimed.receipt = receipt_for(claimed.id, claimed.attempts)
    return claimed


class SQLiteStore:
    """Tasks in one SQLite file; ``create=False`` refuses a path where no store exists.

    Bound to no event loop (its I/O runs in threads), so `twin` is the store itself.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, create: bool = True
    ) -> None:
        # Absolute from the start: the file named in every log line, and the same file
        # whatever directory the process moves to.
        self.path = Path(path).absolute()
        self.file = SQLiteFile(
            self.path,
            busy_timeout=busy_timeout,
            create=create,
            # A relative path is the project's own (.backbeat/tasks.db): its directories
            # are made. An absolute one is the deployment's (a volume, /var/lib/…): a
            # missing directory there is a volume not mounted yet, not one to create.
            make_directories=not Path(path).is_absolute(),
            setup=setup,
            count_unfinished=(
                "SELECT count(*) FROM backbeat_tasks WHERE state IN ('held', 'pending', 'running')"
            ),
        )
        self._enqueues: TurnGroup[list[tuple[Any, ...]], list[str]] = TurnGroup(
            lambda groups: self.file.submit(functools.partial(insert_groups, groups)),
            done=self._notify,
        )
        # When the claim that ran last saw the next due time, and what it was.
        self._due_hint = DueHint()
        self._shares = GatedShare()
        self._wakeups = _WAKEUPS.setdefault(self.path, Wakeups())

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        return cls(path_from_url(url), create=create)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def transactions(self) -> int:
        """Commits made so far: tells how well writes were grouped."""
        return self.file.transactions

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.file.write(fn)

    def _read(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any]) -> list[Any]:
        return self.file.read(sql, parameters)

    async def open(self) -> None:
        # A bad path or a corrupt file is an error here, not at the first task.
        await anyio.to_thread.run_sync(self.file.connection)
        logger.info("backbeat: task store: the SQLite file %s", self.path)

    def never_create(self) -> None:
        """Refuse to create the file from now on (`StoreMissing`): a worker's store, so
        that one started elsewhere never watches a new, empty file no app writes to."""
        self.file.create = False

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.file.close)

    def _notify(self) -> None:
        self._wakeups.notify()

    def twin(self) -> SQLiteStore:
        return self

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the store contract
        due = await self._next_due()
        if due is not None:
            timeout = min(timeout, max(due - time.time(), 0.0) + 0.001)
        await self._wakeups.wait(timeout)

    # --- writes ---------------------------------------------------------------------------

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        """Insert tasks. Enqueues made in one turn of the event loop become one write."""
        for task in tasks:
            self._due_hint.sooner(task.due_at)
        return await self._enqueues.call([insert_row(task) for task in tasks])

    async def activate(self, ids: list[str]) -> None:
        def update(conn: sqlite3.Connection) -> None:
            _activate(conn, json.dumps(ids), time.time())

        await self._write(update)
        self._wakeups.notify()

    async def activate_and_claim(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        def write(conn: sqlite3.Connection) -> list[ClaimedTask]:
            now = time.time()
            listed = json.dumps(ids)
            parameters = {"now": now, "until": now + lease, "worker": worker, "ids": listed}
            rows = conn.execute(START, {**parameters, "limit": limit}).fetchall()
            if len(rows) < len(ids):
                _activate(conn, listed, now)
            return [_claimed(row) for row in rows]

        claimed = await self._write(write)
        if len(claimed) < len(ids):
            self._wakeups.notify()  # some were only activated
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
        only = None if queues is None else len(queues)

        def take(conn: sqlite3.Connection) -> list[ClaimedTask]:
            now = time.time()
            conn.execute(CANCEL_ORPHANS, {"now": now})
            dead_letter = {"now": now, "max_lost": max_lost, "error": lost_leases_error(max_lost)}
            dead = conn.execute(DEAD_LOST, dead_letter).fetchall()
            log_dead_letters(dead)
            parameters: dict[str, Any] = {
                "now": now,
                "until": now + lease,
                "worker": worker,
                "limit": limit,
            }
            parameters.update((f"q{n}", queue) for n, queue in enumerate(queues or ()))
            if alone_first:
                rows = conn.execute(claim_sql(only, True), parameters).fetchall()
                if rows:
                    return [_claimed(row[:-1]) for row in rows]  # never corrupt: it ran
            share = self._shares.next(limit)
            gated, look_at = take_gated(
                conn, {**parameters, "limit": share}, queues, RUNNABLE, CLAIMED_COLUMNS
            )
            parameters["limit"] = limit - len(gated)
            ungated = (
                conn.execute(claim_sql(only, False), parameters).fetchall()
                if parameters["limit"] > 0
                else []
            )
            left = limit - len(gated) - len(ungated)
            if left > 0 and len(gated) == share:  # what the others left, if more may start
                more, look_at = take_gated(
                    conn, {**parameters, "limit": left}, queues, RUNNABLE, CLAIMED_COLUMNS
                )
                gated += more
            claimed: list[list[Any]] = []
            corrupt: list[list[Any]] = []
            for *row, is_corrupt in [*gated, *ungated]:
                (corrupt if is_corrupt else claimed).append(row)
            for row in corrupt:
                logger.error("backbeat: task %r (id %s): %s", row[1], row[0], CORRUPT_AFTER)
                conn.execute(
                    "UPDATE backbeat_tasks SET state = 'failed', finished_at = ?, error = ?, "
                    "lease_until = NULL WHERE id = ?",
                    (now, CORRUPT_AFTER, row[0]),
                )
            soonest = conn.execute(SOONEST, (now,)).fetchone()
            due = soonest[0] if soonest else None
            if look_at is not None and look_at > now:  # a gate opens then
                due = look_at if due is None else min(due, look_at)
            self._due_hint.seen(due)
            return [_claimed(row) for row in claimed]

        return await self._write(take)

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        def extend(conn: sqlite3.Connection) -> list[str]:
            until = time.time() + lease
            stop = []
            for receipt in receipts:
                task_id, attempt = split_receipt(receipt)
                row = conn.execute(
                    f"UPDATE backbeat_tasks SET lease_until = ? WHERE {CURRENT} "
                    "RETURNING cancel_requested",
                    (until, task_id, attempt),
                ).fetchone()
                if row is None or row[0]:
                    stop.append(task_id)
            return stop

        return await self._write(extend)

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        for settlement in settlements:
            if settlement.retry_at is not None:
                self._due_hint.sooner(settlement.retry_at)

        def settle(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            kept = []
            lines: set[str] = set()
            for settlement in settlements:
                task_id, attempt = split_receipt(settlement.receipt)
                parameters = {
                    "now": now,
                    "id": task_id,
                    "attempt": attempt,
                    "result": settlement.result,
                    "error": settlement.error,
                    "traceback": settlement.traceback,
                    "retry_at": settlement.retry_at,
                }
                row = conn.execute(SETTLE[settlement.state], parameters).fetchone()
                kept.append(row is not None)
                if row is not None and row[0] is not None:
                    lines.add(row[0])
            if lines:  # their gates may have a free slot
                settled(conn, lines, now)
            return kept

        return await self._write(settle)

    async def progress(self, receipt: str, document: str) -> bool:
        def keep(conn: sqlite3.Connection) -> bool:
            return conn.execute(PROGRESS, (document, *split_receipt(receipt))).rowcount == 1

        return await self._write(keep)

    async def release(self, receipts: list[str]) -> None:
        def give_back(conn: sqlite3.Connection) -> None:
            lines = set()
            for receipt in receipts:
                for (line,) in conn.execute(RELEASE, split_receipt(receipt)).fetchall():
                    if line is not None:
                        lines.add(line)
            if lines:
                settled(conn, lines, time.time())

        await self._write(give_back)
        self._wakeups.notify()

    async def cancel(self, ids: list[str], reason: str) -> int:
        def stop(conn: sqlite3.Connection) -> int:
            now = time.time()
            count = 0
            for task_id in ids:
                count += conn.execute(CANCEL_WAITING, (now, reason, task_id)).rowcount
                count += conn.execute(CANCEL_RUNNING, (reason, task_id)).rowcount
            return count

        return await self._write(stop)

    async def retry(self, ids: list[str] | None) -> int:
        def again(conn: sqlite3.Connection) -> int:
            now = time.time()
            if ids is None:
                rows = conn.execute(REQUEUE + REQUEUED, (now,)).fetchall()
            else:
                sql = REQUEUE + " AND id = ?" + REQUEUED
                rows = [row for i in ids for row in conn.execute(sql, (now, i)).fetchall()]
            lines = [row for row in rows if row[0] is not None]
            if lines:  # their lines may have been forgotten: written again
                conn.executemany(OPEN_LINE, lines)
            return len(rows)

        count = await self._write(again)
        self._wakeups.notify()
        return count

    async def purge(
        self,
        finished_before: float,
        states: tuple[str, ...] = FINISHED,
        *,
        dry_run: bool = False,
    ) -> int:
        check_purgeable(states)
        marks = ", ".join("?" for _ in states)
        where = f"FROM backbeat_tasks WHERE state IN ({marks}) AND finished_at < ?"
        if dry_run:
            rows = await anyio.to_thread.run_sync(
                self._read, f"SELECT count(*) {where}", (*states, finished_before)
            )
            return int(rows[0][0])

        def delete(conn: sqlite3.Connection) -> int:
            # Start times no rate window reaches any more (keyed gates leave them behind).
            conn.execute(FORGET_OLD_STARTS, (time.time() - LONGEST_WINDOW,))
            return conn.execute(f"DELETE {where}", (*states, finished_before)).rowcount

        return await self._write(delete)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> StoredStatus | None:
        sql = f"SELECT {STATUS_COLUMNS}, after FROM backbeat_tasks WHERE id = ?"
        rows = await anyio.to_thread.run_sync(self._read, sql, (task_id,))
        if not rows:
            return None
        found = StoredStatus(*rows[0][:-1])
        found.after = after_ids(rows[0][-1])
        return found

    async def queues(self) -> list[str]:
        rows = await anyio.to_thread.run_sync(self._read, QUEUES, ())
        return [queue for (queue,) in rows]

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        now = time.time()
        rows = await anyio.to_thread.run_sync(self._read, COUNTS, {"now": now, "queue": queue})
        counts = dict.fromkeys(STATES, 0)
        for state, due_at, count in rows:
            counts[shown_state(state, due_at, now)] += count
        return counts

    async def warm_up(self, queues: tuple[str, ...] | None) -> None:
        """Nothing to get ready: one file, one writer thread, opened at `open`."""

    async def heartbeat(self, worker: WorkerInfo, expires_in: float) -> None:
        def beat(conn: sqlite3.Connection) -> None:
            now = time.time()
            if expires_in <= 0:
                conn.execute("DELETE FROM backbeat_workers WHERE name = ?", (worker.name,))
                return
            worker.seen_at = now
            document = json.dumps(worker.document())
            conn.execute(BEAT, (worker.name, document, now + expires_in))
            conn.execute("DELETE FROM backbeat_workers WHERE expires_at < ?", (now - 3600,))

        await self._write(beat)

    async def workers(self, *, include_expired: bool = False) -> list[WorkerInfo]:
        since = float("-inf") if include_expired else time.time()
        rows = await anyio.to_thread.run_sync(self._read, WORKERS, (since,))
        return [WorkerInfo.from_document(json.loads(document), at) for document, at in rows]

    async def take_over(self, worker: str) -> list[str]:
        def expire(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM backbeat_workers WHERE name = ?", (worker,))
            rows = conn.execute(TAKE_OVER, {"now": time.time(), "worker": worker}).fetchall()
            return [task_id for (task_id,) in rows]

        ids = await self._write(expire)
        if ids:
            self._wakeups.notify()
        return ids

    async def _next_due(self) -> float | None:
        if self._due_hint.fresh():
            return self._due_hint.soonest

        def soonest() -> float | None:
            rows = self._read(SOONEST_OR_LINE, {"now": time.time()})
            return rows[0][0] if rows else None

        return await anyio.to_thread.run_sync(soonest)

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        sql = list_query(state, queue, name, before)
        parameters = {
            "state": state,
            "queue": queue,
            "name": name,
            "before": before,
            "now": time.time(),
            "limit": limit,
        }
        rows = await anyio.to_thread.run_sync(self._read, sql, parameters)
        return [StoredStatus(*row) for row in rows]

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        check_search(where, limit, scan)
        return await self._reading(
            functools.partial(
                sqlite_search.search,
                where=where,
                limit=limit,
                before=before,
                scan=scan,
                now=time.time(),
            )
        )

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        check_scan(scan)
        return await self._reading(functools.partial(sqlite_search.failure_groups, scan=scan))

    async def oldest_due(self, queue: str | None = None) -> float | None:
        oldest = functools.partial(sqlite_search.oldest_due, queue=queue, now=time.time())
        return await self._reading(oldest)

    async def run_now(self, ids: list[str]) -> int:
        count = await self._write(functools.partial(sqlite_search.run_now, ids=ids))
        if count:
            self._due_hint.sooner(time.time())
            self._wakeups.notify()
        return count

    async def delete(self, ids: list[str]) -> int:
        return await self._write(functools.partial(sqlite_search.delete, ids=ids))

    async def _reading(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a read connection in a thread (it may hold a read transaction)."""

        def read() -> T:
            try:
                return fn(self.file.connection())
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the SQLite store {str(self.path)!r}: {exc}") from exc

        return await anyio.to_thread.run_sync(read)

    # --- schedules ------------------------------------------------------------------------

    async def schedules(self) -> list[ScheduleRecord]:
        rows = await anyio.to_thread.run_sync(self._read, SELECT_ALL, ())
        return [record(row) for row in rows]

    async def declare_schedules(self, schedules: list[tuple[str, str]]) -> None:
        now = time.time()

        def declare(conn: sqlite3.Connection) -> None:
            conn.executemany(DECLARE, [(name, rule, now) for name, rule in schedules])

        await self._write(declare)

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
        fired = await self._write(
            functools.partial(
                fire,
                name=name,
                rule=rule,
                tick=tick,
                task=task,
                note=note,
                skip_if_running=skip_if_running,
            )
        )
        if fired is not None and fired.note == "enqueued":
            self._wakeups.notify()
        return fired

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        def pause(conn: sqlite3.Connection) -> bool:
            return conn.execute(PAUSE, (int(paused), time.time(), name)).rowcount > 0

        return await self._write(pause)

    # --- queues and limits (the dashboard) ------------------------------------------------

    async def pause_queue(self, queue: str, paused: bool) -> None:
        await self._write(functools.partial(sqlite_queues.pause, queue=queue, paused=paused))
        if not paused:
            self._due_hint.forget()  # what the last claim saw left the queue out
            self._wakeups.notify()

    async def paused_queues(self) -> list[str]:
        return await self._reading(sqlite_queues.paused_queues)

    async def gate_usage(self) -> list[GateUsage]:
        usage = functools.partial(sqlite_queues.gate_usage, longest_window=LONGEST_WINDOW)
        return await self._reading(usage)

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        return await self._reading(functools.partial(sqlite_attempts.attempts, task_id=task_id))
