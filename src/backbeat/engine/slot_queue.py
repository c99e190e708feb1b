"""The jobs of the in-process feeder that wait for a free concurrency slot, in the order
they start: higher priority first, then in the order they came."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backbeat.engine.jobs import Job


class SlotQueue:
    """Jobs waiting for a slot: priority 0 in a deque (the usual case, cheap), others in
    a heap by priority (higher first; a negative one after the deque), then arrival."""

    __slots__ = ("_arrivals", "_plain", "_ranked")

    def __init__(self) -> None:
        self._plain: deque[Job] = deque()
        self._ranked: list[tuple[int, int, Job]] = []
        self._arrivals = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._plain or self._ranked)

    def add(self, job: Job) -> None:
        priority = job.task.policy.priority
        if priority == 0:
            self._plain.append(job)
        else:
            heapq.heappush(self._ranked, (-priority, next(self._arrivals), job))

    def pop(self) -> Job:
        """The next job to start (IndexError when none waits)."""
        ranked = self._ranked
        if ranked and (ranked[0][0] < 0 or not self._plain):
            return heapq.heappop(ranked)[2]
        return self._plain.popleft()

    def remove(self, job: Job) -> bool:
        """Take a job out of the line (it was cancelled); False if it was not in it."""
        if job in self._plain:
            self._plain.remove(job)
            return True
        entries = [entry for entry in self._ranked if entry[2] is job]
        if not entries:
            return False
        self._ranked.remove(entries[0])
        heapq.heapify(self._ranked)
        return True

    def clear(self) -> None:
        self._plain.clear()
        self._ranked.clear()
