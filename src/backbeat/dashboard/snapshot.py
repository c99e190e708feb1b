"""One shared read of the store for every viewer: the snapshot loop, and its history.

Each tick reads a bounded set of things (`READS_PER_TICK` calls, plus one `counts` per
queue for at most `QUEUES_SHOWN` queues and one `get` per schedule): counts, queues,
workers, the oldest runnable task's due time, paused queues, schedules, limits in use and
the `RUNNING_SHOWN` newest running tasks. The loop runs only while someone watches: the
first subscriber starts it, the last one leaving stops it, and each subscriber holds only
the latest snapshot (a slow viewer skips ticks; nothing queues up). Pages read the latest
snapshot when it is fresh; when it is a little older (under `SERVED_STALE` refreshes) they
show it at once and have a new one read in the background, so a page never waits for the
snapshot's reads while the last one is recent; older than that, or after an action, they
wait for a new one. One read is shared by the pages that ask at once — so page views
never multiply the store's reads either.

History (`History`, 1 h in 10 s buckets) gives the charts: throughput and failure rate
from the finished counts' deltas between two snapshots — a count that went down was a
purge, so that interval is a lower bound, never negative (as in `backbeat watch`) — and the
enqueue-to-start latency of the tasks seen starting since the previous snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backbeat.dashboard.source import Source
from backbeat.status import FINISHED
from backbeat.stores.base import StoredStatus, WorkerInfo
from backbeat.stores.inspection import GateUsage

logger = logging.getLogger("backbeat")

QUEUES_SHOWN = 20
SERVED_STALE = 5  # refresh intervals: a page shows a snapshot this old while a new one is read
RUNNING_SHOWN = 50
BUCKET_SECONDS = 10.0
BUCKETS = 360  # an hour


@dataclass(slots=True)
class Snapshot:
    """What every live page shows, read at `taken_at`."""

    taken_at: float
    counts: dict[str, int]
    queues: dict[str, dict[str, int]]  # per queue, at most QUEUES_SHOWN
    more_queues: int
    workers: list[WorkerInfo]
    oldest_due: float | None
    paused: list[str]
    schedules: list[dict[str, Any]]
    gates: list[GateUsage]
    running: list[StoredStatus]  # the newest, at most RUNNING_SHOWN
    tick: int = 0
    reads: int = 0  # the source's calls so far, after this snapshot
    error: str | None = None  # the latest read failed: this is the one before it


@dataclass(slots=True)
class Bucket:
    start: float
    seconds: float = 0.0
    finished: int = 0
    failed: int = 0
    lower_bound: bool = False  # a purge happened in it
    latency_total: float = 0.0
    latency_count: int = 0


@dataclass(slots=True)
class History:
    """Rates and latencies over the last hour, in buckets."""

    buckets: deque[Bucket] = field(default_factory=lambda: deque(maxlen=BUCKETS))

    def add(self, previous: Snapshot, current: Snapshot) -> None:
        seconds = current.taken_at - previous.taken_at
        if seconds <= 0:
            return
        changes = {
            state: current.counts.get(state, 0) - previous.counts.get(state, 0)
            for state in FINISHED
        }
        start = current.taken_at - current.taken_at % BUCKET_SECONDS
        if not self.buckets or self.buckets[-1].start != start:
            self.buckets.append(Bucket(start))
        bucket = self.buckets[-1]
        bucket.seconds += seconds
        bucket.finished += sum(max(change, 0) for change in changes.values())
        bucket.failed += max(changes.get("failed", 0), 0)
        bucket.lower_bound |= any(change < 0 for change in changes.values())
        for task in current.running:
            started = task.started_at
            if started is not None and started > previous.taken_at:
                bucket.latency_total += max(started - min(task.due_at, started), 0.0)
                bucket.latency_count += 1

    def throughput(self) -> list[float]:
        """Finished tasks per second, per bucket, oldest first."""
        return [b.finished / b.seconds if b.seconds else 0.0 for b in self.buckets]

    def failure_rate(self) -> list[float]:
        """The share of finished tasks that failed, per bucket (0 when none finished)."""
        return [b.failed / b.finished if b.finished else 0.0 for b in self.buckets]

    def latency(self) -> float | None:
        """The mean enqueue-to-start latency of the starts seen in the last 5 minutes."""
        recent = list(self.buckets)[-30:]
        count = sum(b.latency_count for b in recent)
        return sum(b.latency_total for b in recent) / count if count else None

    def lower_bound(self) -> bool:
        return bool(self.buckets) and self.buckets[-1].lower_bound


class Subscriber:
    """A viewer of the live stream: only the latest snapshot, and whether it is new."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None
        self._new = asyncio.Event()

        self.closed = False

    def offer(self, snapshot: Snapshot) -> None:
        self.latest = snapshot
        self._new.set()

    def close(self) -> None:
        self.closed = True
        self._new.set()

    async def next(self) -> Snapshot | None:
        """The next snapshot; None once the dashboard closes (the stream ends)."""
        await self._new.wait()
        self._new.clear()
        if self.closed:
            return None
        assert self.latest is not None
        return self.latest


class Hub:
    """The one snapshot loop of a dashboard (one per `dashboard(...)` app: no globals)."""

    def __init__(
        self, source: Source, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.source = source
        self.interval = interval
        self.clock = clock
        self.latest: Snapshot | None = None
        self.history = History()
        self.ticks = 0
        self._subscribers: set[Subscriber] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[Snapshot] | None = None
        self._outdated = False

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    async def current(self) -> Snapshot:
        """The latest snapshot if it is fresh; if it is recent, that one too, with a new
        one read in the background; else a new one (shared by concurrent asks)."""
        latest = self.latest
        if latest is None or latest.error is not None or self._outdated:
            return await self.read()
        age = self.clock() - latest.taken_at
        if age < self.interval:
            return latest
        if age < self.interval * SERVED_STALE:
            self._refresh()
            return latest
        return await self.read()

    def _refresh(self) -> None:
        """Start reading a snapshot, unless one is being read: no one waits for it."""
        if self._reading is None:
            reading = self._reading = asyncio.ensure_future(self._read())
            reading.add_done_callback(self._forget)

    def _forget(self, reading: asyncio.Future[Snapshot]) -> None:
        if self._reading is reading:
            self._reading = None

    async def read(self) -> Snapshot:
        """Read a snapshot; callers arriving while one is being read get that one."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        reading = self._reading
        try:
            return await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None

    async def _read(self) -> Snapshot:
        self._outdated = False
        try:
            fresh = await read_snapshot(self.source, self.clock)
        except Exception as error:  # a store down: said on the page, read again next tick
            logger.warning("dashboard: reading the store failed: %s", error)
            why = f"{type(error).__name__}: {error}"
            stale = dataclasses.replace(
                self.latest or _empty(self.clock()), error=why, reads=self.source.reads
            )
            self.latest = stale
            return stale
        self.ticks += 1
        fresh.tick = self.ticks
        fresh.reads = self.source.reads
        if self.latest is not None and self.latest.error is None:
            self.history.add(self.latest, fresh)
        self.latest = fresh
        return fresh

    def outdated(self) -> None:
        """An action changed the store: the next page reads afresh (the live loop goes on)."""
        self._outdated = True

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._loop())
        elif self.latest is not None:
            subscriber.offer(self.latest)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None

    async def _loop(self) -> None:
        while self._subscribers:
            snapshot = await self.read()
            for subscriber in list(self._subscribers):
                subscriber.offer(snapshot)
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Stop the loop and end every viewer's stream."""
        for subscriber in list(self._subscribers):
            subscriber.close()
        if self._reading is not None:
            self._reading.cancel()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def read_snapshot(source: Source, clock: Callable[[], float] = time.time) -> Snapshot:
    counts = await source.counts()
    names = await source.queues()
    queues = {}
    if len(names) == 1:
        queues[names[0]] = counts  # one queue: its counts are the totals, no query
    else:
        for name in names[:QUEUES_SHOWN]:
            queues[name] = await source.counts(name)
    return Snapshot(
        taken_at=clock(),
        counts=counts,
        queues=queues,
        more_queues=max(len(names) - QUEUES_SHOWN, 0),
        workers=await source.workers(),
        oldest_due=await source.oldest_due(),
        paused=await source.paused_queues(),
        schedules=await source.schedules(),
        gates=await source.gate_usage(),
        running=await source.running(RUNNING_SHOWN),
    )


def _empty(now: float) -> Snapshot:
    return Snapshot(now, {}, {}, 0, [], None, [], [], [], [])
