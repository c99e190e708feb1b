"""The memory store's gates (`Store.claim`): which waiting tasks with limits may start now.

The rows themselves stay in the store; this keeps what gates remember between claims — the
start times of each rate gate, for one window — and picks, line by line, the first tasks
whose gates are open. A line's order: higher priority first, then sooner due, then as
written (a stable sort of rows kept in the order they were written).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from backbeat.gates import LONGEST_WINDOW
from backbeat.stores.gate_usage import busiest, window_of
from backbeat.stores.inspection import GateUsage
from backbeat.stores.memory_rows import Row
from backbeat.stores.states import StoredState


class MemoryGates:
    def __init__(self) -> None:
        self.starts: dict[str, deque[float]] = {}  # per rate gate, kept for one window
        self.any_gated = False  # a gated task was ever written (else claims skip gates)
        # When a closed rate gate with waiting tasks opens next (`wait` ends then).
        self.reopens: float | None = None

    def open_heads(
        self,
        rows: Iterable[Row],
        now: float,
        limit: int,
        queues: tuple[str, ...] | None,
        runnable: Callable[[Row, float], bool],
        paused: set[str],
    ) -> list[Row]:
        """The first tasks of each line whose gates are open, up to `limit`, in the order
        they start; their starts are counted."""
        lines: dict[str, list[Row]] = {}
        running: dict[str, int] = {}
        for row in rows:
            line, task = row.task.line, row.task
            if line is None:
                continue
            if row.state == StoredState.RUNNING and task.concurrency_gate is not None:
                running[task.concurrency_gate] = running.get(task.concurrency_gate, 0) + 1
            waiting = row.state == StoredState.PENDING or (
                row.state == StoredState.HELD and (row.held_until or 0) < now
            )
            if (
                waiting
                and (queues is None or task.queue in queues)
                and task.queue not in paused
                and runnable(row, now)
            ):
                lines.setdefault(line, []).append(row)
        self.reopens = None
        starting: list[Row] = []
        for waiting_rows in sorted(lines.values(), key=lambda rows: _order(min(rows, key=_order))):
            waiting_rows.sort(key=_order)
            head = waiting_rows[0].task
            room = limit - len(starting)
            log = None
            if head.rate_gate is not None:
                log = self.starts.setdefault(head.rate_gate, deque())
                while log and log[0] <= now - head.rate_window:
                    log.popleft()
                room = min(room, head.rate_limit - len(log))
                if len(log) >= head.rate_limit:  # closed: `wait` ends when it opens
                    reopens = log[0] + head.rate_window
                    self.reopens = min(self.reopens or reopens, reopens)
            if head.concurrency_gate is not None:
                held = running.get(head.concurrency_gate, 0)
                room = min(room, head.max_concurrency - held)
                running[head.concurrency_gate] = held + max(room, 0)
            for row in waiting_rows[: max(room, 0)]:
                if log is not None:
                    log.append(now)
                starting.append(row)
        return starting

    def forget_old_starts(self, now: float) -> None:
        """Start times no rate window reaches any more (keyed gates leave them behind)."""
        forget = now - LONGEST_WINDOW
        for gate in [gate for gate, log in self.starts.items() if not log or log[-1] < forget]:
            del self.starts[gate]


def _order(row: Row) -> tuple[int, float]:
    return (-row.task.priority, row.task.due_at)


def back_in_line(row: Row) -> None:
    """A gated task whose lease ran out waits in its line again (`Store.claim`)."""
    row.lost += 1
    row.make_pending()


def memory_gate_usage(gates: MemoryGates, rows: Iterable[Row], now: float) -> list[GateUsage]:
    """`Store.gate_usage`: starts in each rate gate's window, running tasks per concurrency
    gate, and the tasks waiting in their lines."""
    used: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for gate, log in gates.starts.items():
        window = window_of(gate)
        if window is not None:
            used[gate] = sum(1 for at in log if at > now - window)
    for row in rows:
        task = row.task
        if task.line is None:
            continue
        if row.state == StoredState.RUNNING and task.concurrency_gate is not None:
            used[task.concurrency_gate] = used.get(task.concurrency_gate, 0) + 1
        elif row.state in (StoredState.PENDING, StoredState.HELD):
            for waits_at in (task.rate_gate, task.concurrency_gate):
                if waits_at is not None:
                    waiting[waits_at] = waiting.get(waits_at, 0) + 1
    return busiest(used, waiting)
