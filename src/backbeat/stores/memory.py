"""The store interface in memory: durable semantics (names, JSON, leases) without a file.

Nothing survives the process, so this is not for production: it is the second
implementation of `backbeat.stores.base.Store`, which keeps the interface
honest, and a quick way to test an app's durable behaviour
(``Runner(store="memory://")``). It behaves like the SQLite store, row for row.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from backbeat.logs import log_dead_letters
from backbeat.status import FINISHED, STATES, TaskState
from backbeat.stores import memory_search
from backbeat.stores.base import (
    ClaimedTask,
    DuplicateTask,
    GatedShare,
    NewTask,
    ScheduleRecord,
    Settlement,
    StoredStatus,
    StoreError,
    WorkerInfo,
    check_purgeable,
    lost_leases_error,
    split_receipt,
)
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage
from backbeat.stores.memory_gates import MemoryGates, back_in_line, memory_gate_usage
from backbeat.stores.memory_rows import Row
from backbeat.stores.schedule_ticks import decide_tick
from backbeat.stores.states import LIVE, StoredState, shown_state
from backbeat.stores.wakeups import Wakeups


class MemoryStore:
    """Tasks in a dict, behind a lock: bound to no event loop, so `twin` is itself."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._lock = threading.Lock()  # the lease keeper's and sync callers' loops use it too
        self._wakeups = Wakeups()
        self._gates = MemoryGates()
        self._shares = GatedShare()
        self._paused: set[str] = set()  # queues none of whose tasks start (`pause_queue`)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> MemoryStore:
        """``memory://``: a new, empty store (`create` changes nothing: there is no other)."""
        if url != "memory://":
            raise StoreError(f"a memory store's URL is memory://, with nothing after it: {url!r}")
        return cls()

    def __repr__(self) -> str:
        return "MemoryStore()"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def twin(self) -> MemoryStore:
        return self

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the store contract
        with self._lock:
            now = time.time()
            later = [
                row.task.due_at
                for row in self._rows.values()
                if row.state == StoredState.PENDING and row.task.due_at > now
            ]
        if self._gates.reopens is not None:
            later.append(self._gates.reopens)
        if later:
            timeout = min(timeout, max(min(later) - now, 0.0) + 0.001)
        await self._wakeups.wait(timeout)

    def _runnable(self, row: Row, now: float) -> bool:
        if row.task.due_at > now:
            return False
        for task_id in row.task.after:
            before = self._rows.get(task_id)
            if before is not None and before.state in LIVE:
                return False
        return True

    def _take(self, row: Row, worker: str, now: float, lease: float) -> ClaimedTask:
        if row.state == StoredState.RUNNING:
            row.ended("lost", row.lease_until or now)
            row.lost += 1  # its lease expired: its worker died or hung
        row.state = StoredState.RUNNING
        row.held_until = None
        row.attempts += 1
        row.started_at = now
        row.lease_until = now + lease
        row.worker = worker
        return row.claimed()

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        with self._lock:
            ids = self._add(tasks)
        self._wakeups.notify()
        return ids

    def _add(self, tasks: list[NewTask]) -> list[str]:
        written: set[str] = set()
        for task in tasks:
            if task.id in self._rows or task.id in written:
                raise DuplicateTask(task.id)
            written.add(task.id)
        live = {
            row.task.key: row.task.id
            for row in self._rows.values()
            if row.task.key is not None and row.state in LIVE
        }
        ids = []
        for task in tasks:
            if task.key is not None and task.key in live:
                ids.append(live[task.key])
                continue
            if task.key is not None:
                live[task.key] = task.id
            held = task.held_until is not None
            if task.line is not None:
                self._gates.any_gated = True
            self._rows[task.id] = Row(
                task, StoredState.HELD if held else StoredState.PENDING, held_until=task.held_until
            )
            ids.append(task.id)
        return ids

    async def activate(self, ids: list[str]) -> None:
        with self._lock:
            for task_id in ids:
                row = self._rows.get(task_id)
                if row is not None and row.state == StoredState.HELD:
                    row.make_pending()
        self._wakeups.notify()

    async def activate_and_claim(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        with self._lock:
            now = time.time()
            claimed: list[ClaimedTask] = []
            for task_id in ids:
                row = self._rows.get(task_id)
                if row is None or row.state != StoredState.HELD:
                    continue
                if (
                    len(claimed) < limit
                    and not row.task.after
                    and row.task.due_at <= now
                    and row.task.line is None
                    and row.task.queue not in self._paused
                ):
                    claimed.append(self._take(row, worker, now, lease))
                else:
                    row.make_pending()
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
        with self._lock:
            now = time.time()
            expired = [
                row
                for row in self._rows.values()
                if row.state == StoredState.RUNNING
                and row.lease_until is not None
                and row.lease_until < now
            ]
            for row in expired:
                if row.cancel_requested:  # cancelled while running, and its worker is gone
                    row.ended("cancelled", row.lease_until or now, row.error)
                    row.finish(StoredState.CANCELLED, now)
                elif row.lost + 1 >= max_lost:
                    row.lost += 1
                    row.error = lost_leases_error(max_lost)
                    row.ended("lost", row.lease_until or now, row.error)
                    row.finish(StoredState.FAILED, now)
                    log_dead_letters([(row.task.id, row.task.name, row.error)])
            for row in expired:
                if row.state == StoredState.RUNNING and row.task.line is not None:
                    row.ended("lost", row.lease_until or now)
                    back_in_line(row)
            suspects = [
                row
                for row in expired
                if row.state == StoredState.RUNNING
                and row.lost >= 1
                and (queues is None or row.task.queue in queues)
                and row.task.queue not in self._paused
            ]
            if alone_first and suspects:
                suspects.sort(key=lambda row: row.lease_until or 0)
                return [self._take(suspects[0], worker, now, lease)]
            share = self._shares.next(limit)
            gated = self._start_gated(worker, now, lease, share, queues)
            candidates = [
                row
                for row in self._rows.values()
                if row.task.line is None
                and (
                    (row.state == StoredState.PENDING and self._runnable(row, now))
                    or (
                        row.state == StoredState.HELD
                        and (row.held_until or 0) < now
                        and self._runnable(row, now)
                    )
                    or (
                        row.state == StoredState.RUNNING
                        and (row.lease_until or now) < now
                        and row.lost == 0
                    )
                )
            ]
            if queues is not None:
                candidates = [row for row in candidates if row.task.queue in queues]
            if self._paused:
                candidates = [row for row in candidates if row.task.queue not in self._paused]
            candidates.sort(key=lambda row: (-row.task.priority, row.task.due_at))
            room = limit - len(gated)
            claimed = gated + [self._take(row, worker, now, lease) for row in candidates[:room]]
            if len(gated) == share and len(claimed) < limit:  # the others left room
                claimed += self._start_gated(worker, now, lease, limit - len(claimed), queues)
            return claimed

    def _start_gated(
        self, worker: str, now: float, lease: float, limit: int, queues: tuple[str, ...] | None
    ) -> list[ClaimedTask]:
        if not self._gates.any_gated:
            return []
        heads = self._gates.open_heads(
            self._rows.values(), now, limit, queues, self._runnable, self._paused
        )
        return [self._take(row, worker, now, lease) for row in heads]

    def _current(self, receipt: str) -> Row | None:
        """The row a claim names, while the claim is current (same attempt, running)."""
        task_id, attempt = split_receipt(receipt)
        row = self._rows.get(task_id)
        if row is None or row.state != StoredState.RUNNING or row.attempts != attempt:
            return None
        return row

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        with self._lock:
            stop = []
            for receipt in receipts:
                row = self._current(receipt)
                if row is None or row.cancel_requested:
                    stop.append(split_receipt(receipt)[0])
                if row is not None:
                    row.lease_until = time.time() + lease
            return stop

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        with self._lock:
            now = time.time()
            kept = []
            for settlement in settlements:
                row = self._current(settlement.receipt)
                kept.append(row is not None)
                if row is None:
                    continue
                state = settlement.state
                if state is TaskState.SUCCEEDED:
                    row.finish(StoredState.SUCCEEDED, now)
                    row.result = settlement.result
                    continue
                row.error = settlement.error or row.error
                if state is TaskState.CANCELLED:
                    row.ended("cancelled", now, row.error)
                    row.finish(StoredState.CANCELLED, now)
                    continue
                row.traceback = settlement.traceback
                outcome = "failed" if state is TaskState.FAILED else "retried"
                row.ended(outcome, now, row.error, row.traceback)
                if state is TaskState.FAILED:
                    row.finish(StoredState.FAILED, now)
                else:
                    assert settlement.retry_at is not None
                    row.make_pending()
                    row.task.due_at = settlement.retry_at
            return kept

    async def progress(self, receipt: str, document: str) -> bool:
        with self._lock:
            # Any state: the last report of an attempt may land after its outcome.
            task_id, attempt = split_receipt(receipt)
            row = self._rows.get(task_id)
            if row is None or row.attempts != attempt:
                return False
            row.progress = document
            return True

    async def release(self, receipts: list[str]) -> None:
        with self._lock:
            for receipt in receipts:
                row = self._current(receipt)
                if row is not None and not row.cancel_requested:
                    row.make_pending()
                    row.attempts = max(row.attempts - 1, 0)
        self._wakeups.notify()

    async def cancel(self, ids: list[str], reason: str) -> int:
        with self._lock:
            count = 0
            for task_id in ids:
                row = self._rows.get(task_id)
                if row is not None and row.state in (StoredState.HELD, StoredState.PENDING):
                    row.finish(StoredState.CANCELLED, time.time())
                    row.error = reason
                    count += 1
                elif row is not None and row.state == StoredState.RUNNING:
                    # Cancelled by its worker, told at its next renewal.
                    row.cancel_requested = True
                    row.error = reason
                    count += 1
            return count

    async def retry(self, ids: list[str] | None) -> int:
        with self._lock:
            rows = self._rows.values() if ids is None else [self._rows.get(i) for i in ids]
            count = 0
            for row in rows:
                if row is not None and row.state == StoredState.FAILED:
                    row.make_pending()
                    row.attempts = 0
                    row.lost = 0
                    row.started_at = None
                    row.finished_at = None
                    row.task.due_at = time.time()
                    count += 1
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
        with self._lock:
            self._gates.forget_old_starts(time.time())
            doomed = [
                task_id
                for task_id, row in self._rows.items()
                if row.state in states and (row.finished_at or 0) < finished_before
            ]
            if not dry_run:
                for task_id in doomed:
                    del self._rows[task_id]
            return len(doomed)

    async def get(self, task_id: str) -> StoredStatus | None:
        with self._lock:
            row = self._rows.get(task_id)
            if row is None:
                return None
            return replace(row.status(), after=row.task.after)

    async def queues(self) -> list[str]:
        with self._lock:
            return sorted({row.task.queue for row in self._rows.values()})

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        with self._lock:
            now = time.time()
            counts = dict.fromkeys(STATES, 0)
            for row in self._rows.values():
                if queue is not None and row.task.queue != queue:
                    continue
                counts[shown_state(row.state, row.task.due_at, now)] += 1
            return counts

    async def warm_up(self, queues: tuple[str, ...] | None) -> None:
        """Nothing to get ready: the tasks are in this process."""

    async def heartbeat(self, worker: WorkerInfo, expires_in: float) -> None:
        with self._lock:
            if expires_in <= 0:
                self._workers.pop(worker.name, None)
                return
            worker.seen_at = time.time()
            self._workers[worker.name] = (replace(worker), worker.seen_at + expires_in)

    async def workers(self, *, include_expired: bool = False) -> list[WorkerInfo]:
        with self._lock:
            since = float("-inf") if include_expired else time.time()
            listed = [
                replace(info, expires_at=expires)
                for info, expires in self._workers.values()
                if expires > since
            ]
        return sorted(listed, key=lambda info: info.name)

    async def take_over(self, worker: str) -> list[str]:
        with self._lock:
            self._workers.pop(worker, None)
            now = time.time()
            ids = []
            for row in self._rows.values():
                if (
                    row.state == StoredState.RUNNING
                    and row.worker == worker
                    and (row.lease_until or 0) > now
                ):
                    row.lease_until = now
                    ids.append(row.task.id)
        if ids:
            self._wakeups.notify()
        return ids

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        with self._lock:
            now = time.time()
            found = []
            for row in sorted(self._rows.values(), key=lambda row: row.task.id, reverse=True):
                if (
                    (state is None or shown_state(row.state, row.task.due_at, now) == state)
                    and (queue is None or row.task.queue == queue)
                    and (name is None or row.task.name == name)
                    and (before is None or row.task.id < before)
                ):
                    found.append(row.status())
                    if len(found) == limit:
                        break
            return found

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        with self._lock:
            return memory_search.search(
                self._rows.values(), where, limit, before, scan, time.time()
            )

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        with self._lock:
            return memory_search.failure_groups(self._rows.values(), scan)

    async def oldest_due(self, queue: str | None = None) -> float | None:
        with self._lock:
            return memory_search.oldest_due(self._rows.values(), queue, time.time())

    async def run_now(self, ids: list[str]) -> int:
        with self._lock:
            now = time.time()
            waiting = [
                row
                for row in map(self._rows.get, dict.fromkeys(ids))
                if row and row.state == StoredState.PENDING
            ]
            for row in waiting:
                row.task.due_at = min(row.task.due_at, now)
        if waiting:
            self._wakeups.notify()
        return len(waiting)

    async def delete(self, ids: list[str]) -> int:
        with self._lock:
            doomed = [
                task_id
                for task_id in dict.fromkeys(ids)
                if task_id in self._rows and self._rows[task_id].state in FINISHED
            ]
            for task_id in doomed:
                del self._rows[task_id]
            return len(doomed)

    async def schedules(self) -> list[ScheduleRecord]:
        with self._lock:
            return [replace(self._schedules[name]) for name in sorted(self._schedules)]

    async def declare_schedules(self, schedules: list[tuple[str, str]]) -> None:
        with self._lock:
            for name, rule in schedules:
                if name not in self._schedules:
                    self._schedules[name] = ScheduleRecord(name, rule, updated_at=time.time())

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
        with self._lock:
            record = self._schedules.setdefault(name, ScheduleRecord(name, rule))
            decision = decide_tick(record, tick, task, note, skip_if_running)
            if decision is None:
                return None
            previous = self._rows.get(decision.unless_running or "")
            if previous is not None and previous.state in LIVE:
                decision = decision.still_running()
            if decision.enqueue is not None:
                record.last_task = self._add([decision.enqueue])[0]
            record.rule, record.last_tick, record.note = rule, tick, decision.note
            record.updated_at = time.time()
            fired = replace(record)
        if fired.note == "enqueued":
            self._wakeups.notify()
        return fired

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        with self._lock:
            record = self._schedules.get(name)
            if record is None:
                return False
            record.paused = paused
            record.updated_at = time.time()
            return True

    # --- queues and limits (the dashboard) ------------------------------------------------

    async def pause_queue(self, queue: str, paused: bool) -> None:
        with self._lock:
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
        if not paused:
            self._wakeups.notify()

    async def paused_queues(self) -> list[str]:
        with self._lock:
            return sorted(self._paused)

    async def gate_usage(self) -> list[GateUsage]:
        with self._lock:
            return memory_gate_usage(self._gates, self._rows.values(), time.time())

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        with self._lock:
            row = self._rows.get(task_id)
            return [] if row is None else [replace(record) for record in row.history]
